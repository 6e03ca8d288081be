#!/usr/bin/env python3
"""Issue 16's proof on AWS, the story half: a customer whose personal values
are long and found nowhere else, with
  - a welcome deferred by quiet hours (quiet all day in their time zone, then
    verified: the welcome journey asks for its marketing email, the channel
    defers it and sets a deferral timer in the scheduler);
  - a 300-entry timeline (300 changes of last name, phone and address);
  - an event parked in the dead-letter queue (a copy of their stored
    registration, its personal fields still the stored ciphertext, without
    the fields the projections need, on a stream of its own: poison for the
    projector, which parks it);
  - a pending cart timer (a cart left open);
is erased, and every consequence carried through the deployed pipeline
(scripts/smoke_pipeline.py) until nothing moves. Then scripts/erasure_scan.py
looks for their values (STORY_VALUES) everywhere.

Before the story, a catch-all rule on the bus copies every event put on it
to a capture queue (CAPTURE_QUEUE), which the scan reads with every other
queue. `erasure_story.py --capture` only installs that rule (idempotent), so
it can run before scripts/lambda_smoke.py and capture the smoke customer too.

Usage: erasure_story.py [--capture] <invoke-port>
Environment: AWS_ENDPOINT_URL (moto), EVENTS_TABLE, EVENT_BUS_NAME,
DEAD_LETTER_QUEUE_URL, SCHEDULE_GROUP, as given to the functions under
`cargo lambda watch` on 127.0.0.1:<invoke-port>.
"""
import json
import os
import pathlib
import sys
import time
import urllib.request
import uuid

import boto3

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from smoke_pipeline import Pipeline  # noqa: E402

EMAIL = "octavia.brackenridge-proof16@aws-erasure-proof.example"
FIRST_NAME = "Octaviabrackenridge"
LAST_NAMES = ["Featherstonehaugh-Quarrington", "Wolstenholme-Pemberthwick"]
PHONES = ["+4917612916716", "+4917698716167"]
ADDRESS_LINE = "77 Brackenridge Featherstone Terrace"
IP = "198.51.100.167"
USER_AGENT = "AwsErasureProof/16.7 (Brackenridge; three-hundred-entry timeline)"
PROFILE_CHANGES = 300

# Every personal value the story's customer ever gave: what the scan looks for.
STORY_VALUES = [EMAIL, FIRST_NAME, *LAST_NAMES, *PHONES, ADDRESS_LINE, IP, USER_AGENT]


def capture_queue_name() -> str:
    return f"{os.environ['EVENT_BUS_NAME']}-capture-all"


def install_capture() -> str:
    """A queue receiving every event put on the bus (a rule whose pattern
    matches any source); its URL. Idempotent."""
    bus = os.environ["EVENT_BUS_NAME"]
    events, sqs = boto3.client("events"), boto3.client("sqs")
    try:
        events.create_event_bus(Name=bus)
    except events.exceptions.ResourceAlreadyExistsException:
        pass
    name = capture_queue_name()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": [{"prefix": ""}]}))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "capture", "Arn": arn}])
    return url


def _request(method: str, path: str, body=None, query: str = "", route=None) -> dict:
    """An HTTP API (payload 2.0) request as API Gateway hands it to the api
    function, with a JWT holding every scope."""
    scopes = ["crm/read", "crm/write", "crm/privacy", "crm/admin"]
    route = route or f"{method} {path}"
    now = int(time.time())
    event = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "application/json",
            "authorization": "Bearer test-token",
            "content-type": "application/json",
            "host": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "user-agent": "erasure-story/1.0",
            "x-forwarded-for": "203.0.113.10",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123defg",
            "authorizer": {"jwt": {"claims": {
                "aud": "crm-api", "exp": str(now + 3600), "iat": str(now),
                "iss": "https://issuer.example.com/", "scope": " ".join(scopes), "sub": "erasure-story",
            }, "scopes": scopes}},
            "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123defg",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.10", "userAgent": "erasure-story/1.0"},
            "requestId": uuid.uuid4().hex,
            "routeKey": route,
            "stage": "$default",
            "timeEpoch": now * 1000,
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    if body is not None:
        event["body"] = json.dumps(body)
    return event


class Api:
    """The api function under `cargo lambda watch`, invoked over its Lambda
    Invoke endpoint (one HTTP call, no process per request)."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/2015-03-31/functions/api/invocations"

    def call(self, method, path, body=None, query="", route=None):
        data = json.dumps(_request(method, path, body, query, route)).encode()
        req = urllib.request.Request(self.url, data=data, method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=900) as answer:
            out = json.loads(answer.read() or b"null") or {}
        text = out.get("body") or ""
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return out.get("statusCode"), parsed


def expect(what, status, body, wanted):
    if status != wanted:
        raise SystemExit(f"FAIL {what}: {status} (expected {wanted}): {str(body)[:500]}")


def events_of(customer: str, event_type: str) -> list:
    """The customer's stored events of one type (items of the events table)."""
    ddb = boto3.client("dynamodb")
    out = []
    for page in ddb.get_paginator("scan").paginate(TableName=os.environ["EVENTS_TABLE"]):
        for item in page["Items"]:
            if item.get("kind", {}).get("S") == "event" and item.get("type", {}).get("S") == event_type \
                    and item.get("customer_id", {}).get("S") == customer:
                out.append(item)
    return out


def park_poison_copy(customer: str) -> str:
    """Stores a copy of the customer's registration, as stored (its personal
    fields the ciphertext the api wrote: their associated data is the customer
    and the field's path, so they decrypt anywhere), without `source` and
    `terms_accepted`, on a stream of its own: the projector cannot use it and
    parks it. Returns the copy's event id."""
    registered = events_of(customer, "CustomerRegistered")
    if len(registered) != 1:
        raise SystemExit(f"FAIL the customer has {len(registered)} stored registrations")
    item = dict(registered[0])
    data = json.loads(item["data"]["S"])
    for field in ("source", "terms_accepted"):
        data.pop(field, None)
    event_id = str(uuid.uuid4())
    item.update({
        "pk": {"S": f"customer-{uuid.uuid4()}"},
        "sk": {"N": "1"},
        "event_id": {"S": event_id},
        "correlation_id": {"S": event_id},
        "actor": {"S": "system:erasure-story"},
        "data": {"S": json.dumps(data)},
    })
    item.pop("causation_id", None)
    boto3.client("dynamodb").put_item(TableName=os.environ["EVENTS_TABLE"], Item=item)
    return event_id


def dead_letters_holding(text: str) -> int:
    """How many messages of the dead-letter queue hold `text` (left in place)."""
    sqs = boto3.client("sqs")
    seen, n = set(), 0
    while True:
        got = sqs.receive_message(QueueUrl=os.environ["DEAD_LETTER_QUEUE_URL"], MaxNumberOfMessages=10,
                                  VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])
        fresh = [m for m in got if m["MessageId"] not in seen]
        if not fresh:
            return n
        for m in fresh:
            seen.add(m["MessageId"])
            n += text in m["Body"]


def schedules_naming(text: str) -> list:
    """Names of the schedules of the timers' group whose input holds `text`."""
    scheduler = boto3.client("scheduler")
    group = os.environ["SCHEDULE_GROUP"]
    names = [s["Name"] for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group)
             for s in page["Schedules"]]
    return [n for n in names
            if text in (scheduler.get_schedule(Name=n, GroupName=group)["Target"].get("Input") or "")]


def pipeline_at_the_end(port: int) -> Pipeline:
    """The deployed pipeline, reading the events table's stream from now on
    (what earlier scripts stored was carried through by them)."""
    pipeline = Pipeline(port, os.environ["EVENTS_TABLE"], os.environ["EVENT_BUS_NAME"]).setup()
    for shard in list(pipeline.iterators):
        pipeline.iterators[shard] = pipeline.streams.get_shard_iterator(
            StreamArn=pipeline.stream_arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    return pipeline


def settle(pipeline: Pipeline, rounds: int = 6):
    """Pumps until a round carries nothing more."""
    for _ in range(rounds):
        before = (pipeline.relayed, sum(pipeline.delivered.values()))
        pipeline.pump()
        if (pipeline.relayed, sum(pipeline.delivered.values())) == before:
            return


def story(port: int) -> str:
    api = Api(port)
    pipeline = pipeline_at_the_end(port)
    status, body = api.call("POST", "/customers", {
        "email": EMAIL, "first_name": FIRST_NAME, "last_name": LAST_NAMES[0], "phone": PHONES[0],
        "source": "web", "marketing_consent": {"email": True, "sms": True, "push": False},
        "terms_accepted": True, "ip": IP, "user_agent": USER_AGENT,
        "timezone": "America/New_York", "locale": "en-US",
    })
    expect("register", status, body, 201)
    customer = body["id"]
    print(f"ok   story: registered {customer}")

    # 1. A welcome deferred by quiet hours.
    status, body = api.call("PUT", f"/customers/{customer}/preferences", {
        "email_frequency": "daily", "timezone": "America/New_York",
        "quiet_hours": {"start": "00:00", "end": "23:59"},
    }, route="PUT /customers/{id}/preferences")
    expect("quiet hours", status, body, 200)
    settle(pipeline)
    status, body = api.call("GET", f"/customers/{customer}/events", query="limit=50",
                            route="GET /customers/{id}/events")
    expect("events", status, body, 200)
    token = next((e["data"]["token"] for e in body.get("items", [])
                  if e.get("type") == "EmailVerificationRequested"), None)
    if not token:
        raise SystemExit(f"FAIL no verification token among the customer's events: {str(body)[:500]}")
    status, body = api.call("POST", f"/customers/{customer}/email/verify", {"token": token},
                            route="POST /customers/{id}/email/verify")
    expect("verify", status, body, 200)
    settle(pipeline)
    deferred = events_of(customer, "MessageDeferred")
    timers = schedules_naming(customer)
    if not deferred:
        raise SystemExit("FAIL the welcome was not deferred by the quiet hours")
    print(f"ok   story: the welcome is deferred ({len(deferred)} MessageDeferred, "
          f"{len(timers)} schedules naming the customer)")

    # 2. A 300-entry timeline.
    for n in range(PROFILE_CHANGES):
        change = [
            {"last_name": LAST_NAMES[(n // 3 + 1) % 2]},
            {"phone": PHONES[(n // 3 + 1) % 2]},
            {"address": {"line1": ADDRESS_LINE, "line2": f"Flat {n}", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"}},
        ][n % 3]
        status, body = api.call("PATCH", f"/customers/{customer}", change, route="PATCH /customers/{id}")
        expect(f"profile change {n}", status, body, 200)
        if n % 50 == 49:
            settle(pipeline)
    settle(pipeline)
    entries, after = 0, None
    while True:
        query = "limit=100" + (f"&after={after}" if after is not None else "")
        status, body = api.call("GET", f"/customers/{customer}/timeline", query=query,
                                route="GET /customers/{id}/timeline")
        expect("timeline", status, body, 200)
        entries += len(body.get("items", []))
        after = body.get("next_after")
        if after is None:
            break
    if entries <= PROFILE_CHANGES:
        raise SystemExit(f"FAIL the timeline holds {entries} entries")
    print(f"ok   story: the timeline holds {entries} entries")

    # 3. An event parked in the dead-letter queue.
    poison = park_poison_copy(customer)
    settle(pipeline)
    if not dead_letters_holding(poison):
        raise SystemExit(f"FAIL the poison copy {poison} was not parked in the dead-letter queue")
    print(f"ok   story: the poison copy {poison} is parked in the dead-letter queue")

    # 4. A pending cart timer.
    status, body = api.call("POST", "/carts", {"customer_id": customer, "currency": "EUR"})
    expect("cart", status, body, 201)
    cart = body["id"]
    status, body = api.call("POST", f"/carts/{cart}/items", {
        "product_id": "lamp", "name": "Desk lamp", "quantity": 1, "unit_price_minor": 1000,
    }, route="POST /carts/{id}/items")
    expect("cart item", status, body, 200)
    settle(pipeline)
    if not schedules_naming(cart):
        raise SystemExit(f"FAIL no schedule for the cart {cart}'s inactivity timer")
    print(f"ok   story: the cart {cart} waits on its inactivity timer")

    # Erased, and everything carried through.
    status, body = api.call("DELETE", f"/customers/{customer}", route="DELETE /customers/{id}")
    expect("erase", status, body, 202)
    settle(pipeline, rounds=10)
    status, body = api.call("GET", f"/customers/{customer}", route="GET /customers/{id}")
    if status != 200 or not isinstance(body, dict) or body.get("status") != "erased":
        raise SystemExit(f"FAIL the customer does not read erased: {status} {str(body)[:300]}")
    print(f"ok   story: {customer} erased; pipeline relayed {pipeline.relayed} records, "
          f"delivered {pipeline.delivered}")
    return customer


def main() -> int:
    args = sys.argv[1:]
    capture_only = "--capture" in args
    args = [a for a in args if a != "--capture"]
    install_capture()
    if capture_only:
        print(f"ok   every event on {os.environ['EVENT_BUS_NAME']} is copied to {capture_queue_name()}")
        return 0
    story(int(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
