#!/usr/bin/env python3
"""Consumer smoke test: invoke the projector and consent functions, running
under `cargo lambda watch` against moto, with their sample events, and check
what they wrote to the read-models table.

The samples are one customer stream: events/projector/customer-registered.json
carries version 1 (CustomerRegistered), events/consent/consent-granted.json
version 2 (ConsentGranted) of the same stream, as a registration with the
marketing-email box ticked stores them. Deployed, both would be in the events
table before the relay put them on the bus, so this script first seeds both
events into the events table (in the item layout of
shared/aws/src/dynamodb/items.rs). The consent function's rule never sends it
version 1, so its delivery of version 2 must fill the gap from the events
table: that is checked too.

Steps:
  1. create the events and read-models tables and the dead-letter queue if
     they do not exist; seed versions 1 and 2 of the sample stream;
  2. projector <- customer-registered.json: the customer 360 appears;
  3. consent <- consent-granted.json: the ledger holds marketing/email,
     its checkpoint is at 2 (version 1 read from the events table);
  4. consent <- the same event again: a duplicate, nothing changes;
  5. projector <- order-placed.json (crm.commerce): the attribution order
     fact and the funnel's purchase step appear;
  5b. projector <- payment-succeeded.json (version 2 of the order stream):
     the profile metrics record the payment, and the segment evaluator
     appends CustomerSegmentAdded (buyers among them) to the customer's
     segments stream in the events table;
  6. projector <- an event whose detail is not an envelope: answered (not
     failed) and parked in the dead-letter queue.

Usage: consumer_smoke.py <invoke-port>
Environment: AWS_ENDPOINT_URL (moto), EVENTS_TABLE, READ_MODELS_TABLE,
DEAD_LETTER_QUEUE_URL, the same values the functions under `cargo lambda
watch` were given; AWS credentials and region for boto3.
Needs: boto3 and cargo-lambda on PATH.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.request
import uuid

import boto3
from botocore.exceptions import ClientError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from smoke_pipeline import QUEUE_FED, sqs_batch  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
REGISTERED = REPO / "events" / "projector" / "customer-registered.json"
GRANTED = REPO / "events" / "consent" / "consent-granted.json"
ORDER_PLACED = REPO / "events" / "projector" / "order-placed.json"
PAYMENT_SUCCEEDED = REPO / "events" / "projector" / "payment-succeeded.json"


class SmokeFailure(Exception):
    pass


def env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SmokeFailure(f"environment variable {name} is not set")
    return value


def ensure_table(ddb, name: str, sk_type: str, stream: bool) -> None:
    try:
        ddb.describe_table(TableName=name)
        return
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    spec = {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": sk_type},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        spec["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    ddb.create_table(**spec)
    ddb.get_waiter("table_exists").wait(TableName=name)


def ensure_queue(sqs, url: str) -> None:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    created = sqs.create_queue(QueueName=name)["QueueUrl"]
    if created.rstrip("/").rsplit("/", 1)[-1] != name:
        raise SmokeFailure(f"created queue {created}, expected one named {name}")


def event_item(envelope: dict) -> dict:
    """An envelope as the DynamoDB event store lays it out (items.rs)."""
    item = {
        "pk": {"S": envelope["stream_id"]},
        "sk": {"N": str(envelope["version"])},
        "kind": {"S": "event"},
        "event_id": {"S": envelope["event_id"]},
        "type": {"S": envelope["type"]},
        "schema_version": {"N": str(envelope["schema_version"])},
        "occurred_at": {"S": envelope["occurred_at"]},
        "recorded_at": {"S": envelope["recorded_at"]},
        "correlation_id": {"S": envelope["correlation_id"]},
        "actor": {"S": envelope["actor"]},
        "data": {"S": json.dumps(envelope["data"], separators=(",", ":"))},
    }
    if envelope.get("customer_id"):
        item["customer_id"] = {"S": envelope["customer_id"]}
    if envelope.get("causation_id"):
        item["causation_id"] = {"S": envelope["causation_id"]}
    return item


def invoke(port: int, function: str, payload: dict) -> dict:
    """Invokes `function`; a bare EventBridge event for a queue-fed function
    arrives as its queue would hand it over: an SQS batch of one."""
    if function in QUEUE_FED and "Records" not in payload:
        payload = sqs_batch([payload])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
        path = f.name
    try:
        out = subprocess.run(
            ["cargo", "lambda", "invoke", function, "--invoke-address", "127.0.0.1",
             "--invoke-port", str(port), "--data-file", path, "--output-format", "json"],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        pathlib.Path(path).unlink(missing_ok=True)
    if out.returncode != 0:
        raise SmokeFailure(f"cargo lambda invoke {function} failed: {out.stderr.strip()}")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise SmokeFailure(f"{function} answered something that is not JSON: {out.stdout!r}") from e


def expect_handled(function: str, answer: dict) -> None:
    """The batch answer of a queue-fed function: no message to deliver again.
    (What each consumer did is checked in the tables after each step.)"""
    if answer.get("batchItemFailures") != []:
        raise SmokeFailure(f"{function}: expected no batch item failures, got {answer}")


def document(ddb, table: str, consumer: str, partition: str, sort: str) -> dict:
    item = ddb.get_item(
        TableName=table,
        Key={"pk": {"S": f"{consumer}#{partition}"}, "sk": {"S": sort}},
        ConsistentRead=True,
    ).get("Item")
    if item is None:
        raise SmokeFailure(f"no {consumer} document {partition}/{sort} in {table}")
    return json.loads(item["body"]["S"])


def checkpoint(ddb, table: str, consumer: str, stream_id: str) -> int:
    """`consumer`'s version in the stream's one checkpoint item (decision 0036)."""
    item = ddb.get_item(
        TableName=table,
        Key={"pk": {"S": f"checkpoint#{stream_id}"}, "sk": {"S": "checkpoint"}},
        ConsistentRead=True,
    ).get("Item")
    version = (item or {}).get(f"v#{consumer}")
    return int(version["N"]) if version else 0


def check(name: str, condition: bool, detail: str = "") -> None:
    if not condition:
        raise SmokeFailure(f"{name}{': ' + detail if detail else ''}")
    print(f"ok   {name}")


def parked_letter(sqs, url: str, bus_event_id: str) -> dict | None:
    for _ in range(5):
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in messages:
            letter = json.loads(message["Body"])
            payload = letter.get("payload")
            if isinstance(payload, dict) and payload.get("id") == bus_event_id:
                return letter
    return None


def run(port: int) -> None:
    events_table = env("EVENTS_TABLE")
    read_models = env("READ_MODELS_TABLE")
    queue_url = env("DEAD_LETTER_QUEUE_URL")
    ddb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")

    registered = json.loads(REGISTERED.read_text())
    granted = json.loads(GRANTED.read_text())
    v1, v2 = registered["detail"], granted["detail"]
    if (v1["stream_id"], v1["version"], v2["version"]) != (v2["stream_id"], 1, 2):
        raise SmokeFailure("the samples must be versions 1 and 2 of one stream")
    stream, customer = v1["stream_id"], v1["customer_id"]

    ensure_table(ddb, events_table, "N", stream=True)
    ensure_table(ddb, read_models, "S", stream=False)
    ensure_queue(sqs, queue_url)
    for envelope in (v1, v2):
        ddb.put_item(TableName=events_table, Item=event_item(envelope))
    print(f"seeded {stream} versions 1-2 into {events_table}")

    answer = invoke(port, "projector", registered)
    expect_handled("projector", answer)
    profile = document(ddb, read_models, "customer-360", customer, "profile")
    # The sample customer's events are plain and the customer has no data key (as stored
    # before decision 0017): the sealed read model (decision 0045) never holds a personal
    # value it cannot seal, so the 360 holds the marker, and the address is nowhere in it.
    check("projector: customer 360 written, sealed (no key: the marker, never the address)",
          profile.get("id") == customer and profile.get("email") == "[erased]"
          and v1["data"]["email"] not in json.dumps(profile)
          and profile.get("status") is not None, json.dumps(profile)[:300])
    check("projector: checkpoint moved",
          checkpoint(ddb, read_models, "customer-360", stream) >= 1)

    answer = invoke(port, "consent", granted)
    expect_handled("consent", answer)
    record = document(ddb, read_models, "consent-ledger", customer, "current#marketing#email")
    check("consent: ledger holds marketing/email",
          record.get("status") == "active" and record.get("proof", {}).get("event_id") == v2["event_id"],
          json.dumps(record)[:300])
    check("consent: gap filled from the events table (checkpoint at 2)",
          checkpoint(ddb, read_models, "consent-ledger", stream) == 2)

    answer = invoke(port, "consent", granted)
    expect_handled("consent", answer)
    again = document(ddb, read_models, "consent-ledger", customer, "current#marketing#email")
    check("consent: duplicate delivery changed nothing", again == record)

    # An order (crm.commerce) reaches the insight projections: the order
    # attribution reads, and its funnel step under the customer.
    placed = json.loads(ORDER_PLACED.read_text())
    order = placed["detail"]
    ddb.put_item(TableName=events_table, Item=event_item(order))
    answer = invoke(port, "projector", placed)
    expect_handled("projector", answer)
    fact = document(ddb, read_models, "attribution", f"order#{order['data']['order_id']}", "order")
    check("projector: the order is recorded for attribution",
          fact.get("total_minor") == order["data"]["total_minor"] and fact.get("customer_id") == customer,
          json.dumps(fact)[:300])
    step = document(ddb, read_models, "funnel", customer,
                    f"step#{order['occurred_at'][:19]}.000000Z#{order['event_id']}")
    check("projector: the order is the customer's purchase stage", step.get("stage") == "purchase", json.dumps(step))

    # The payment makes the customer a buyer: profile metrics and segment
    # membership events, appended by the projector to the events table.
    paid = json.loads(PAYMENT_SUCCEEDED.read_text())
    payment = paid["detail"]
    if (payment["stream_id"], payment["version"]) != (order["stream_id"], order["version"] + 1):
        raise SmokeFailure("payment-succeeded.json must follow order-placed.json on the order stream")
    ddb.put_item(TableName=events_table, Item=event_item(payment))
    answer = invoke(port, "projector", paid)
    expect_handled("projector", answer)
    facts = document(ddb, read_models, "profile-metrics", customer, f"order#{order['data']['order_id']}")
    check("projector: the payment is in the customer's profile metrics",
          [p.get("amount_minor") for p in facts.get("payments", [])] == [payment["data"]["amount_minor"]],
          json.dumps(facts)[:300])
    items = ddb.query(
        TableName=events_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"segments-{customer}"}},
        ConsistentRead=True,
    ).get("Items", [])
    added = sorted(json.loads(i["data"]["S"]).get("segment", "") for i in items
                   if i.get("type", {}).get("S") == "CustomerSegmentAdded")
    check("projector: segment membership appended to the events table",
          "buyers" in added and len(added) == len(items), json.dumps(added))
    answer = invoke(port, "projector", paid)
    expect_handled("projector", answer)
    again = ddb.query(
        TableName=events_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"segments-{customer}"}},
        ConsistentRead=True,
    ).get("Items", [])
    check("projector: a redelivered payment appends no membership twice", len(again) == len(items))

    garbage = dict(registered, id=str(uuid.uuid4()), detail={"not": "an envelope"})
    answer = invoke(port, "projector", garbage)
    check("projector: unusable event answered, not failed",
          answer.get("batchItemFailures") == [], json.dumps(answer))
    letter = parked_letter(sqs, queue_url, garbage["id"])
    check("projector: unusable event parked in the dead-letter queue",
          letter is not None and letter.get("consumer") == "projector",
          json.dumps(letter)[:300] if letter else "no letter found")


def smoke_main(run_smoke, name: str, doc: str) -> int:
    """A smoke's command line: `<script> <invoke-port>`; 0 passed, 1 failed, 2 misused."""
    if len(sys.argv) != 2:
        print(doc.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {name}_smoke.py <invoke-port>", file=sys.stderr)
        return 2
    try:
        run_smoke(int(sys.argv[1]))
    except (SmokeFailure, ClientError) as e:
        print(f"FAIL {e}")
        return 1
    print(f"{name} smoke: passed")
    return 0


def moto_raw_emails(endpoint: str) -> list:
    """The raw messages moto's SES keeps (`/moto-api/data.json`)."""
    request = urllib.request.Request(endpoint.rstrip("/") + "/moto-api/data.json?service=ses",
                                     headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read()).get("ses", {}).get("RawMessage", [])


if __name__ == "__main__":
    sys.exit(smoke_main(run, "consumer", __doc__))
