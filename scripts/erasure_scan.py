#!/usr/bin/env python3
"""Erasure on AWS (issues 7 and 16): after the erased customers' stories were
carried through the deployed pipeline, no DynamoDB table on moto, no SQS
queue (the dead-letter queues and the bus's capture queue among them, so
every event put on the bus), no schedule of the timers' group and no line of
the functions' log output holds their personal data in plain text.

The customers:
  - lambda_smoke.py's: registered, profile, email and consents changed,
    activity recorded, erased (events/api/90-erase-customer.json). Looked
    for: both email addresses, the last name, the phone number and the
    street of the address given later (the first name "Sam" is too short to
    tell apart from base64 ciphertext);
  - erasure_story.py's (issue 16's proof): a welcome deferred by quiet hours,
    a 300-entry timeline, a dead letter, a pending cart timer; every value
    (erasure_story.STORY_VALUES) long and found nowhere else.

Every hit is reported where it is: table and key, queue and message id,
schedule name, log line number.

Usage: erasure_scan.py <log file of cargo lambda watch>
(after `erasure_story.py --capture` before lambda_smoke.py, and
`erasure_story.py <invoke-port>` after it)
Environment: AWS_ENDPOINT_URL (moto), EVENTS_TABLE, READ_MODELS_TABLE,
EVENT_BUS_NAME, SCHEDULE_GROUP.
"""
import json
import os
import pathlib
import sys
from collections import Counter

import boto3

REPO = pathlib.Path(__file__).resolve().parent.parent
EVENTS = REPO / "events" / "api"
sys.path.insert(0, str(REPO / "scripts"))
from erasure_story import STORY_VALUES, capture_queue_name  # noqa: E402


def smoke_values() -> list:
    registered = json.loads(json.loads((EVENTS / "01-register-customer.json").read_text())["body"])
    profile = json.loads(json.loads((EVENTS / "05-update-profile.json").read_text())["body"])
    changed = json.loads(json.loads((EVENTS / "09-change-email.json").read_text())["body"])
    return [
        registered["email"],
        changed["new_email"],
        registered["phone"],
        profile["last_name"],
        profile["address"]["line1"],
    ]


def _key(item: dict) -> str:
    parts = []
    for name in ("pk", "sk"):
        if name in item:
            parts.append(f"{name}={next(iter(item[name].values()))}")
    return " ".join(parts) or json.dumps(item, default=str)[:80]


def dynamodb_items() -> list:
    """(where, item as JSON text) of every item of every table."""
    ddb = boto3.client("dynamodb")
    out = []
    # ListTables answers at most 100 names a page: the workspace's tests
    # leave more than that on the shared moto.
    tables = [name for page in ddb.get_paginator("list_tables").paginate() for name in page["TableNames"]]
    for table in tables:
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                out.append((f"table {table} item {_key(item)}", json.dumps(item, default=str)))
    return out


def queue_messages() -> list:
    """(where, body) of every message in any queue, left in place: each is
    received hidden (so that the next receive answers the others: with a
    visibility timeout of 0, moto answers the first ten again and again), and
    made visible again once the queue is read."""
    sqs = boto3.client("sqs")
    out = []
    urls = [url for page in sqs.get_paginator("list_queues").paginate() for url in page.get("QueueUrls", [])]
    for url in urls:
        receipts = {}
        while True:
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300, WaitTimeSeconds=0
            ).get("Messages", [])
            fresh = [m for m in got if m["MessageId"] not in receipts]
            if not fresh:
                break
            for m in fresh:
                receipts[m["MessageId"]] = m["ReceiptHandle"]
                out.append((f"queue {url.rsplit('/', 1)[-1]} message {m['MessageId']}", m["Body"]))
        handles = list(receipts.values())
        for i in range(0, len(handles), 10):
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for n, h in enumerate(handles[i:i + 10])
            ])
    return out


def schedules() -> list:
    """(where, schedule as JSON text) of every schedule of every group: the
    timers' payloads (their targets' input)."""
    scheduler = boto3.client("scheduler")
    out = []
    groups = [g["Name"] for page in scheduler.get_paginator("list_schedule_groups").paginate()
              for g in page["ScheduleGroups"]]
    for group in groups:
        for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group):
            for s in page["Schedules"]:
                got = scheduler.get_schedule(Name=s["Name"], GroupName=group)
                got.pop("ResponseMetadata", None)
                out.append((f"schedule {group}/{s['Name']}", json.dumps(got, default=str)))
    return out


def hits(places: list, needles: list) -> list:
    found = []
    for where, text in places:
        lower = text.lower()
        for needle in needles:
            # Addresses in any case; names as written ("Smoke-Test" is not the
            # actor "smoke-tester"); the story's long values in any case.
            case_blind = "@" in needle or needle in STORY_VALUES
            if (needle.lower() in lower) if case_blind else (needle in text):
                at = lower.find(needle.lower()) if case_blind else text.find(needle)
                found.append(f"{where}: {needle!r} at {at}: ...{text[max(0, at - 120):at + 180]}...")
    return found


def place_of(hit: str) -> str:
    """A hit's place without its item, message or line: the table and the
    kind of key (what precedes `#` in pk), the queue, the schedule group, the log."""
    where = hit.split(": ", 1)[0]
    if where.startswith("table "):
        table, _, key = where[len("table "):].partition(" item ")
        return f"table {table} pk={key.removeprefix('pk=').split('#', 1)[0].split(' ', 1)[0]}#..."
    if where.startswith("queue "):
        return where.split(" message ", 1)[0]
    if where.startswith("schedule "):
        return where.split("/", 1)[0]
    return where.split(" line ", 1)[0]


def main() -> int:
    log = pathlib.Path(sys.argv[1]).read_text(errors="replace")
    needles = smoke_values() + STORY_VALUES
    items = dynamodb_items()
    tables = {where.split()[1] for where, _ in items}
    for required in ("EVENTS_TABLE", "READ_MODELS_TABLE"):
        name = os.environ[required]
        if name not in tables:
            print(f"FAIL {name} holds no items: the smoke stored nothing to scan")
            return 1
    messages = queue_messages()
    capture = capture_queue_name()
    captured = [m for m in messages if m[0].startswith(f"queue {capture} ")]
    queues = [url.rsplit("/", 1)[-1] for page in boto3.client("sqs").get_paginator("list_queues").paginate()
              for url in page.get("QueueUrls", [])]
    if capture not in queues:
        print(f"note the bus has no capture queue ({capture}): the events put on it are scanned only as far "
              "as other queues hold them (run `erasure_story.py --capture` before the smoke, and "
              "`erasure_story.py <port>` before this scan)")
    elif not captured:
        print(f"FAIL the capture queue {capture} holds no event: its catch-all rule caught nothing")
        return 1
    timers = schedules()
    lines = [(f"log {sys.argv[1]} line {n + 1}", line) for n, line in enumerate(log.splitlines())]
    found = hits(items + messages + timers + lines, needles)
    if found:
        print(f"FAIL personal data of the erased customers is still stored in plain text ({len(found)} places), by where:")
        for place, n in sorted(Counter(place_of(f) for f in found).items()):
            print(f"     {n:>5} x {place}")
        print("     the first 60:")
        for f in found[:60]:
            print(f"     {f}")
        return 1
    print(f"ok   erasure on AWS: {len(items)} DynamoDB items in {len(tables)} tables, {len(messages)} queued "
          f"messages ({len(captured)} events captured off the bus), {len(timers)} schedules and "
          f"{len(lines)} log lines hold none of {len(needles)} personal values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
