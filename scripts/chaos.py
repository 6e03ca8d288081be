#!/usr/bin/env python3
"""Customer stories through the whole stack on moto, with a share of the AWS
calls faulted, and the checks that nothing was lost or sent twice (issue 15,
"Proof").

    .venv/bin/python scripts/chaos.py [--stories 50] [--wave 50] [--rate 0.2] [--seed 1]
                                      [--max-consecutive 2] [--keep]
                                      [--units-out FILE] [--marginal-views 3]
                                      [--crash-rate 0.05] [--crash-points a,b]

1. Starts its own moto (scripts/moto_server.py, a free port) and the fault
   proxy (scripts/fault_proxy.py, in this process) in front of it at rate 0;
   creates template.yaml's stack with scripts/aws_local.py (visibility
   timeout 2 s, 900 s when measuring, maxReceiveCount 5,
   MessageSettleSeconds 3), builds the
   functions and runs them with AWS_ENDPOINT_URL = the proxy; then sets the
   proxy's rate (DynamoDB, KMS, EventBridge, Scheduler and SES calls; BEFORE
   and AFTER faults; at most --max-consecutive faults in a row per call).
   With --crash-rate R > 0 the functions are built with the `crash-points`
   feature and run with CRM_CRASH_RATE=R, CRM_CRASH_POINTS (--crash-points,
   default every point of crm_core::crash) and CRM_CRASH_SEED=--seed: each
   pass through a chosen point aborts the function's process with
   probability R, as a Lambda crash or timeout loses the invocation whole
   (the pump deletes nothing; the batch comes back after the visibility
   timeout; the process is started again).
2. Runs the stories through the api function (the Lambda invoke API that
   `cargo lambda invoke` uses, API Gateway v2 events built from
   events/api/01-register-customer.json). A story: register (marketing email
   consent), read the events for the verification token, verify the email,
   record a product view, then either place an order and pay it, or create a
   cart and put an item in it. Every write carries an Idempotency-Key; an
   answer 5xx (or no answer) is retried with the same key and body, as a
   client would. After every `--wave` stories (default 50) it pumps the
   pipeline, so the queues hold about a wave's messages.
3. Pumps (stream -> relay -> bus -> rules -> queues -> functions) until the
   queues are quiet, plays SES's feedback (a `Send` and a `Delivery` event on
   the default bus for every email moto's SES kept, once each), pumps, waits
   the settle window and pumps again with the due timers (the channel's
   settle timers; the journeys' own timers are hours away and stay).
4. Sets the rate to 0 (and starts the functions again without crash
   points), redrives every dead-letter queue once with
   `crm-ops dlq redrive` (the relay's onto the bus, the consumers' onto their
   queues), pumps and plays the feedback again.
5. Prints the figures and checks: lost (must be 0), by replay and diff
   (`crm-ops check --full`, decision 0035: every stored event folded through
   every projection of the projector and consent groups, every document
   compared with the read-models table; the events whose documents are
   missing or different), duplicate sends (more than one
   email with one X-CRM-Message-Id), every expected email sent exactly once
   (per customer: the verification email, the welcome email after the
   verification, the order confirmation of a paid order), dead-letter queues
   empty after the redrive, no journey left
   waiting without its schedule; with crashes, the crashes per point (from
   the functions' logs) and that the pump saw each one as a lost invocation.
   Exits 1 if any of them fails.

`--rate 0` is the baseline. Without faults and crashes (`--rate 0
--crash-rate 0`) the run also measures what the deployed wiring spends per
stored event (issue 15: "the same run without faults gives the write and read
units per event used by the cost model"): the proxy counts the DynamoDB
capacity units of the functions' requests by DynamoDB's rules
(fault_proxy.CapacityMeter), their KMS, EventBridge (PutEvents entries),
Scheduler and SES calls; the pump's SQS requests are counted as the event
source mappings would make them (ReceiveMessage calls that got messages,
DeleteMessageBatch calls; each message received once is one SendMessage of a
rule); the timers the pump fires are Scheduler's invocations. They are
printed under "units per event stored" and, with `--units-out FILE`, written
as JSON (`crm-local bench --cost ... --measured FILE` uses them in the cost
model, decision 0038). The functions run with AWS_SDK_UA_APP_ID = their
binary name, so the proxy counts every request for the function that made it:
the file's `by_function` holds each function's DynamoDB units (by table and
operation), KMS, EventBridge, Scheduler, SES and SQS calls, invocations and
messages received. The file's figures are taken once the stories have
settled; then (`--marginal-views N`, default 3) each customer records N
PageViewed events, which no campaign triggers, waits or exits on, the
pipeline is pumped, and the difference is the file's `marginal`: what an
event that starts and advances nothing costs each function. Logs: the state directory it prints (the
functions' logs, moto's, crm-ops' outputs), removed at the end unless --keep
or a check failed.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import email
import email.policy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import aws_local  # noqa: E402
import fault_proxy  # noqa: E402

from boto3.dynamodb.types import TypeDeserializer  # noqa: E402

SETTLE_SECONDS = 3
VISIBILITY_TIMEOUT = 2
# Without faults nothing is reported failed, so nothing waits on the
# visibility timeout; a long one keeps a slow invocation (a loaded machine,
# the meter's own reads) from being delivered again while it runs, which
# would count its units twice.
MEASURING_VISIBILITY_TIMEOUT = 900
MAX_RECEIVE_COUNT = 5
API_ATTEMPTS = 6
FAULTED_SERVICES = ("dynamodb", "kms", "events", "scheduler", "ses")
DESERIALIZE = TypeDeserializer().deserialize


class Invocations:
    """Wraps aws_local.invoke (what the pump calls): times every invocation
    and waits up to `wait` seconds for an answer, however short the
    function's Timeout, so that a slow batch is measured rather than cut off
    and redelivered in a loop. An invocation longer than the function's
    template Timeout would have been killed on AWS: they are counted."""

    def __init__(self, state: dict, wait: float):
        self.state, self.wait = state, wait
        self.longest: dict = collections.defaultdict(float)
        self.over_timeout: dict = collections.Counter()
        self.count: dict = collections.Counter()
        # {function: {detail-type: n}}: the queue messages each invocation was handed, by type.
        self.by_type: dict = collections.defaultdict(collections.Counter)
        self._invoke = aws_local.invoke
        aws_local.invoke = self.invoke

    def invoke(self, port, function, payload, timeout=900, exits=None):
        for record in (payload.get("Records") or []) if isinstance(payload, dict) else []:
            if isinstance(record, dict) and isinstance(record.get("body"), str):
                try:
                    kind = json.loads(record["body"]).get("detail-type", "?")
                except (ValueError, AttributeError):
                    kind = "?"
                self.by_type[function][kind] += 1
        started = time.monotonic()
        try:
            return self._invoke(port, function, payload, max(timeout, self.wait), exits=exits)
        finally:
            took = time.monotonic() - started
            self.count[function] += 1
            self.longest[function] = max(self.longest[function], round(took, 1))
            limit = self.state["functions"].get(function, {}).get("timeout")
            if limit and took > limit:
                self.over_timeout[function] += 1
                log(f"{function}: an invocation took {took:.0f} s, over its Timeout of {limit} s")


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the proxy


class Proxy:
    """fault_proxy in a thread of this process, in front of moto."""

    def __init__(self, moto_url: str, seed: int, max_consecutive: int):
        config = fault_proxy.Config(seed=seed, rate=0.0, services=FAULTED_SERVICES,
                                    max_consecutive=max_consecutive)
        self.server = fault_proxy.serve("127.0.0.1", 0, moto_url, config)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _control(self, method: str, what: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/fault-proxy/{what}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def configure(self, **changes) -> dict:
        return self._control("POST", "config", changes)

    def stats(self) -> dict:
        return self._control("GET", "stats")

    def close(self) -> None:
        self.server.shutdown()


class QueueRequests:
    """Counts the SQS requests of the pump (it plays the consumers' event
    source mappings): aws_local's SQS clients report each ReceiveMessage (with
    messages, or empty), each DeleteMessageBatch or DeleteMessage, and every
    message id received (a message a rule sent: SendMessage)."""

    def __init__(self):
        self.receives = 0
        self.empty_receives = 0
        self.deletes = 0
        self.messages: set = set()
        self._client = aws_local.client
        aws_local.client = self.client

    def client(self, service, endpoint, region=aws_local.REGION):
        made = self._client(service, endpoint, region)
        if service == "sqs":
            made.meta.events.register("after-call.sqs.ReceiveMessage", self._received)
            made.meta.events.register("after-call.sqs.DeleteMessageBatch", self._deleted)
            made.meta.events.register("after-call.sqs.DeleteMessage", self._deleted)
        return made

    def _received(self, parsed=None, **_):
        got = (parsed or {}).get("Messages") or []
        if got:
            self.receives += 1
            self.messages.update(m["MessageId"] for m in got)
        else:
            self.empty_receives += 1

    def _deleted(self, **_):
        self.deletes += 1


def snapshot(proxy: Proxy, state: dict, queues: QueueRequests, invocations: "Invocations",
             totals: "Totals") -> dict:
    """What the run has spent so far: the proxy's counts (by caller too), the
    events stored, the pump's SQS requests, the invocations and messages each
    function received, the timers fired."""
    return {
        "stats": proxy.stats(),
        "events": stored_events(state),
        "sqs": {"receives": queues.receives, "empty_receives": queues.empty_receives, "deletes": queues.deletes,
                "messages": len(queues.messages)},
        "invocations": dict(invocations.count),
        "delivered": totals.sum("delivered"),
        "delivered_by_type": {f: dict(sorted(c.items())) for f, c in sorted(invocations.by_type.items())},
        "timers_fired": sum(c.timers_fired for c in totals.counts),
    }


def _minus(after, before):
    """`after - before`, number by number, through nested dicts (a key
    missing from `before` counts 0; a non-number is taken from `after`)."""
    if isinstance(after, dict):
        before = before if isinstance(before, dict) else {}
        return {k: _minus(v, before.get(k)) for k, v in after.items()}
    if isinstance(after, (int, float)) and not isinstance(after, bool):
        return after - (before if isinstance(before, (int, float)) else 0)
    return after


def _calls(services: dict, service: str, only=None) -> int:
    """Requests of `service` that reached moto (forwarded, or answered and then faulted)."""
    return sum(s["forwarded"] + s["faulted_after"] for op, s in services.get(service, {}).items()
               if only is None or only(op))


def _dynamodb_by_table(capacity: dict, logical: dict) -> dict:
    """{logical table: {write_units, read_units, requests, items_written, bytes_written, operations}}."""
    by_table: dict = {}
    for table, ops in (capacity.get("tables") or {}).items():
        row = by_table.setdefault(logical.get(table, table), {"write_units": 0.0, "read_units": 0.0, "requests": 0,
                                                              "items_written": 0, "bytes_written": 0,
                                                              "operations": {}})
        for op, u in ops.items():
            for k in ("write_units", "read_units", "requests", "items_written", "bytes_written"):
                row[k] += u[k]
            row["operations"][op] = {k: u[k] for k in ("requests", "write_units", "read_units", "items_written",
                                                       "bytes_written", "items_read", "bytes_read",
                                                       "conditional_failures")}
    return by_table


def by_function(state: dict, stats: dict, invocations: dict, delivered: dict) -> dict:
    """Each function's own spending, from the proxy's counts by caller (the
    functions run with AWS_SDK_UA_APP_ID = their binary name): its DynamoDB
    units by table and operation, its KMS, EventBridge (PutEvents entries),
    Scheduler, SES and SQS calls, its invocations and the messages (stream
    records for the relay) it received. Requests without an app id are under
    `unattributed`."""
    logical = {r["ref"]: name for name, r in state["resources"].items() if r["type"] == "AWS::DynamoDB::Table"}
    out = {}
    callers = stats.get("by_caller") or {}
    for name in sorted(set(callers) | set(invocations) | set(delivered)):
        caller = callers.get(name, {})
        services = caller.get("services", {})
        capacity = caller.get("dynamodb_capacity", {})
        out[name] = {
            "invocations": invocations.get(name, 0),
            "messages_received": delivered.get(name, 0),
            "write_units": capacity.get("totals", {}).get("write_units", 0.0),
            "read_units": capacity.get("totals", {}).get("read_units", 0.0),
            "dynamodb_requests": capacity.get("totals", {}).get("requests", 0),
            "dynamodb": _dynamodb_by_table(capacity, logical),
            "kms_calls": _calls(services, "kms"),
            "eventbridge_entries": services.get("events", {}).get("PutEvents", {}).get("entries", 0),
            "scheduler_calls": _calls(services, "scheduler"),
            "ses_sends": _calls(services, "ses", lambda op: op.startswith("Send")),
            "sqs_sends": _calls(services, "sqs", lambda op: op in ("SendMessage", "SendMessageBatch")),
            "calls": {service: {op: s["forwarded"] + s["faulted_after"] for op, s in ops.items()}
                      for service, ops in services.items()},
        }
    return out


def units_per_event(args, state: dict, snap: dict, emails: list, marginal: dict | None = None) -> dict:
    """What the run spent, in total, per stored event and by function (see
    the module doc), as of the snapshot `snap`; with the `marginal` phase's
    figures if it ran."""
    stats, events = snap["stats"], snap["events"]
    services = stats["services"]
    capacity = stats.get("dynamodb_capacity") or {}
    logical = {r["ref"]: name for name, r in state["resources"].items() if r["type"] == "AWS::DynamoDB::Table"}
    by_table = _dynamodb_by_table(capacity, logical)
    function_sends = _calls(services, "sqs", lambda op: op in ("SendMessage", "SendMessageBatch"))
    totals = {
        "write_units": capacity.get("totals", {}).get("write_units", 0.0),
        "read_units": capacity.get("totals", {}).get("read_units", 0.0),
        "event_store_write_units": by_table.get("EventsTable", {}).get("write_units", 0.0),
        "event_store_read_units": by_table.get("EventsTable", {}).get("read_units", 0.0),
        "read_models_write_units": by_table.get("ReadModelsTable", {}).get("write_units", 0.0),
        "read_models_read_units": by_table.get("ReadModelsTable", {}).get("read_units", 0.0),
        "keys_write_units": by_table.get("KeysTable", {}).get("write_units", 0.0),
        "keys_read_units": by_table.get("KeysTable", {}).get("read_units", 0.0),
        "dynamodb_requests": capacity.get("totals", {}).get("requests", 0),
        "sqs_sends": snap["sqs"]["messages"] + function_sends,
        "sqs_receives": snap["sqs"]["receives"],
        "sqs_deletes": snap["sqs"]["deletes"],
        "eventbridge_entries": services.get("events", {}).get("PutEvents", {}).get("entries", 0),
        "scheduler_calls": _calls(services, "scheduler"),
        "scheduler_invocations": snap["timers_fired"],
        "kms_calls": _calls(services, "kms"),
        "ses_sends": _calls(services, "ses", lambda op: op.startswith("Send")),
        "lambda_invocations": sum(snap["invocations"].values()),
    }
    n = max(1, len(events))
    out = {
        "source": "scripts/chaos.py --rate 0",
        "stories": args.stories,
        "seed": args.seed,
        "events": len(events),
        "emails": len(emails),
        "sqs_empty_receives": snap["sqs"]["empty_receives"],
        "unmetered_dynamodb_requests": capacity.get("unmetered", 0),
        "lambda_invocations_by_function": snap["invocations"],
        "delivered_by_function": snap["delivered"],
        "delivered_by_type": snap["delivered_by_type"],
        "events_by_type": dict(sorted(collections.Counter(e.get("type") for e in events).items())),
        "dynamodb_by_table": by_table,
        "totals": totals,
        "per_event": {k: round(v / n, 4) for k, v in totals.items()},
        "by_function": by_function(state, stats, snap["invocations"], snap["delivered"]),
    }
    if marginal is not None:
        out["marginal"] = marginal
    return out


def marginal_phase(args, api: "Api", stories: list, state: dict, totals: "Totals", take) -> dict:
    """The cost of a customer event that starts and advances nothing: after
    the stories have settled (their journeys started, waiting or exited),
    each story's customer records `--marginal-views` PageViewed events (no
    campaign triggers on, waits for or exits on PageViewed; every rule that
    takes customer activity routes it, the campaign's among them), the
    pipeline is pumped, and the difference of two snapshots (`take()`) is
    what those events cost, by function."""
    before = take()
    sent = 0
    for story in stories:
        if not story.customer_id:
            continue
        cid = story.customer_id
        for k in range(args.marginal_views):
            got = api.call("POST", "/customers/{id}/activity", f"/customers/{cid}/activity", {"id": cid}, {
                "type": "PageViewed", "url": f"https://shop.example.com/help/{k}", "title": "Help",
                "session_id": f"s-{story.key('marginal')}",
            }, story.key(f"marginal-{k}"))
            if got[0] in (200, 201, 202):
                sent += 1
            else:
                story.problems.append(f"marginal page view: {got[0]} {json.dumps(got[1])[:300]}")
    pump(state, totals, fire=False)
    after = take()
    delta = _minus({k: v for k, v in after.items() if k != "events"},
                   {k: v for k, v in before.items() if k != "events"})
    new = len(after["events"]) - len(before["events"])
    by_type = collections.Counter(e.get("type") for e in after["events"]) - collections.Counter(
        e.get("type") for e in before["events"])
    return {
        "what": "PageViewed, recorded after the stories settled (starts, advances and exits nothing)",
        "requests": sent,
        "events": new,
        "events_by_type": dict(sorted(by_type.items())),
        "sqs": delta["sqs"],
        "timers_fired": delta["timers_fired"],
        "delivered_by_type": {f: {t: n for t, n in c.items() if n} for f, c in delta["delivered_by_type"].items()},
        "by_function": by_function(state, delta["stats"], delta["invocations"], delta["delivered"]),
    }


# ------------------------------------------------------------------ the api


class Api:
    """API Gateway v2 events to the api function; a 5xx or no answer is
    retried with the same request (same Idempotency-Key)."""

    def __init__(self, port: int, run_id: str, exits: str | None = None):
        self.port = port
        self.exits = exits  # the api function's exit log: a crash is seen at once
        self.crashed = 0  # invocations lost to a crash of the api function
        self.run_id = run_id
        self.template = json.loads((REPO / "events" / "api" / "01-register-customer.json").read_text())
        self.requests = 0  # distinct requests
        self.attempts = 0  # invocations, retries included
        self.retried = 0  # requests that needed more than one attempt
        self.statuses = collections.Counter()
        self.failed: list = []  # (route, last answer) of requests that never got a non-5xx answer

    def event(self, method: str, route: str, path: str, params: dict, body, key: str | None) -> dict:
        e = json.loads(json.dumps(self.template))
        e["routeKey"] = e["requestContext"]["routeKey"] = f"{method} {route}"
        e["rawPath"] = e["requestContext"]["http"]["path"] = path
        e["requestContext"]["http"]["method"] = method
        e["requestContext"]["requestId"] = uuid.uuid4().hex
        e["rawQueryString"] = ""
        # A client allowed to read and write customers, carts and orders:
        # the scopes of decision 0039 and the older names of the template.
        scopes = ["crm/read", "crm/write", "crm/customers.read", "crm/customers.write"]
        jwt = e["requestContext"].setdefault("authorizer", {}).setdefault("jwt", {})
        jwt.setdefault("claims", {})["scope"] = " ".join(scopes)
        jwt["scopes"] = scopes
        headers = e["headers"]
        headers.pop("idempotency-key", None)
        if key:
            headers["idempotency-key"] = key
        if params:
            e["pathParameters"] = params
        if body is None:
            e.pop("body", None)
            headers.pop("content-type", None)
        else:
            e["body"] = json.dumps(body)
        return e

    def call(self, method: str, route: str, path: str, params: dict | None = None, body=None,
             key: str | None = None) -> tuple:
        """(status, body) of the request; retried while it answers 5xx."""
        event = self.event(method, route, path, params or {}, body, key)
        self.requests += 1
        last = None
        for attempt in range(API_ATTEMPTS):
            self.attempts += 1
            if attempt == 1:
                self.retried += 1
            try:
                answer = aws_local.invoke(self.port, "api", event, 60, exits=self.exits) or {}
            except aws_local.InvokeError as e:
                if isinstance(e, aws_local.InvocationCrashed):
                    self.crashed += 1
                last = (None, str(e))
                time.sleep(0.5 * (attempt + 1))
                continue
            status = answer.get("statusCode")
            text = answer.get("body") or ""
            try:
                parsed = json.loads(text) if text else None
            except json.JSONDecodeError:
                parsed = text
            last = (status, parsed)
            if status is not None and status < 500:
                self.statuses[status] += 1
                return status, parsed
            time.sleep(0.3 * (attempt + 1))
        self.statuses[last[0]] += 1
        self.failed.append((f"{method} {route}", last))
        return last


def order_body(customer_id: str) -> dict:
    return {
        "customer_id": customer_id,
        "items": [
            {"product_id": "beans", "name": "Espresso beans", "category": "consumables", "quantity": 2,
             "unit_price_minor": 1250},
            {"product_id": "jug", "name": "Milk jug", "quantity": 1, "unit_price_minor": 500},
        ],
        "subtotal_minor": 3000, "tax_minor": 570, "shipping_minor": 430, "total_minor": 4000, "currency": "EUR",
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    }


class Story:
    """One customer's requests, and what they should produce."""

    def __init__(self, api: Api, n: int):
        self.api, self.n = api, n
        self.email = f"chaos-{api.run_id}-{n}@example.com"
        self.customer_id = None
        self.verified = False
        self.paid_order = None
        self.problems: list = []

    def key(self, what: str) -> str:
        return f"chaos-{self.api.run_id}-{self.n}-{what}"

    def expect(self, what: str, got: tuple, statuses) -> bool:
        if got[0] in statuses:
            return True
        self.problems.append(f"{what}: {got[0]} {json.dumps(got[1])[:300]}")
        return False

    def run(self) -> None:
        api, n = self.api, self.n
        got = api.call("POST", "/customers", "/customers", body={
            "email": self.email, "first_name": "Chaos", "last_name": f"Story{n}", "source": "web",
            "marketing_consent": {"email": True, "sms": False, "push": False}, "terms_accepted": True,
            "ip": "203.0.113.10", "user_agent": "chaos/1.0", "timezone": "Europe/Berlin", "locale": "de-DE",
        }, key=self.key("register"))
        if not self.expect("register", got, (200, 201)) or not isinstance(got[1], dict):
            return
        cid = self.customer_id = got[1]["id"]
        p = {"id": cid}
        got = api.call("GET", "/customers/{id}/events", f"/customers/{cid}/events", p)
        if not self.expect("events", got, (200,)):
            return
        tokens = [e["data"]["token"] for e in (got[1] or {}).get("items", [])
                  if e.get("type") == "EmailVerificationRequested" and "token" in e.get("data", {})]
        if not tokens:
            self.problems.append(f"events: no EmailVerificationRequested token in {json.dumps(got[1])[:300]}")
            return
        got = api.call("POST", "/customers/{id}/email/verify", f"/customers/{cid}/email/verify", p,
                       {"token": tokens[-1]}, self.key("verify"))
        self.verified = self.expect("verify", got, (200, 204))
        got = api.call("POST", "/customers/{id}/activity", f"/customers/{cid}/activity", p, {
            "type": "ProductViewed", "product_id": f"sku-{n % 7}", "name": "Beans", "category": "coffee",
            "price_minor": 1250, "session_id": f"s-{self.key('s')}",
        }, self.key("activity"))
        self.expect("activity", got, (200, 201, 202))
        if n % 3 != 2:
            got = api.call("POST", "/orders", "/orders", body=order_body(cid), key=self.key("order"))
            if not self.expect("order", got, (201,)):
                return
            oid = got[1]["id"]
            got = api.call("POST", "/orders/{id}/payments", f"/orders/{oid}/payments", {"id": oid}, {
                "payment_id": f"pay-{n}", "status": "succeeded", "method": "credit-card", "amount_minor": 4000,
                "currency": "EUR", "provider": "stripe", "transaction_id": f"tx-{n}",
            }, self.key("pay"))
            if self.expect("pay", got, (200,)):
                self.paid_order = oid
        else:
            got = api.call("POST", "/carts", "/carts", body={"customer_id": cid, "currency": "EUR"},
                           key=self.key("cart"))
            if not self.expect("cart", got, (201,)):
                return
            cart = got[1]["id"]
            got = api.call("POST", "/carts/{id}/items", f"/carts/{cart}/items", {"id": cart}, {
                "product_id": "beans", "name": "Espresso beans", "quantity": 1, "unit_price_minor": 1250,
            }, self.key("cart-item"))
            self.expect("cart item", got, (200,))


# ------------------------------------------------------------------ SES, played


def moto_data(endpoint: str) -> dict:
    # Only SES's models (scripts/moto_server.py): the whole dump takes seconds.
    request = urllib.request.Request(endpoint.rstrip("/") + "/moto-api/data.json?service=ses",
                                     headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


SES_MESSAGE_KINDS = ("RawMessage", "Message", "TemplateMessage", "BulkTemplateMessage")


def sent_emails(endpoint: str) -> list:
    """Every email moto's SES kept: {ses_id, crm_id, to, subject, source, headers}."""
    out = []
    ses = moto_data(endpoint).get("ses") or {}
    for kind in SES_MESSAGE_KINDS:
        for m in ses.get(kind) or []:
            raw = m.get("raw_data")
            if raw:
                parsed = email.message_from_string(raw, policy=email.policy.compat32)
                headers = [(k, str(v)) for k, v in parsed.items()]
                to = [a.strip() for a in (parsed.get("To") or "").split(",") if a.strip()]
                to += m.get("destinations") or []
            else:
                headers = []
                dest = m.get("destinations") or m.get("destination") or {}
                to = dest.get("ToAddresses", []) if isinstance(dest, dict) else list(dest)
            get = {k.lower(): v for k, v in headers}
            out.append({
                "kind": kind, "ses_id": m.get("id"), "crm_id": get.get("x-crm-message-id"),
                "to": sorted(set(to)), "subject": get.get("subject") or m.get("subject"),
                "source": m.get("source") or get.get("from"), "headers": headers,
            })
    return out


def event_data(item: dict) -> dict:
    data = item.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return {}
    return data if isinstance(data, dict) else {}


def message_requests(state: dict) -> dict:
    """{message_id: the MessageRequested's data} from the events table: the
    tags the channel gave SES, which moto does not keep."""
    return {d.get("message_id"): d for d in (event_data(e) for e in stored_events(state)
                                               if e.get("type") == "MessageRequested")}


class SesFeedback:
    """Puts SES's `Send` and `Delivery` events on the default bus, once per email."""

    def __init__(self, state: dict):
        self.state = state
        self.events = aws_local.client("events", state["endpoint"], state["region"])
        self.config_set = next(v["ref"] for v in state["resources"].values()
                               if v["type"] == "AWS::SES::ConfigurationSet")
        self.templates = {name: json.loads((REPO / "events" / "channel" / f"ses-{name}.json").read_text())
                          for name in ("send", "delivery")}
        self.played: set = set()

    def play(self) -> int:
        played = 0
        requests = None
        for m in sent_emails(self.state["endpoint"]):
            ident = m["ses_id"] or m["crm_id"]
            if ident in self.played:
                continue
            self.played.add(ident)
            if requests is None or m["crm_id"] not in requests:
                requests = message_requests(self.state)
            request = requests.get(m["crm_id"], {})
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            entries = []
            for name, template in self.templates.items():
                event = json.loads(json.dumps(template))
                mail = event["detail"]["mail"]
                mail.update(timestamp=now, messageId=m["ses_id"] or str(uuid.uuid4()), destination=m["to"],
                            source=m["source"] or mail["source"])
                if m["headers"]:
                    mail["headers"] = [{"name": k, "value": v} for k, v in m["headers"]]
                mail["commonHeaders"].update(to=m["to"], subject=m["subject"])
                tags = {"ses:configuration-set": [self.config_set]}
                if m["crm_id"]:
                    tags["message_id"] = [m["crm_id"]]
                for tag in ("campaign_id", "customer_id", "category"):
                    if request.get(tag):
                        tags[tag.replace("campaign_id", "campaign")] = [str(request[tag])]
                mail["tags"] = {**{k: v for k, v in mail["tags"].items() if k.startswith("ses:")}, **tags}
                if name == "delivery":
                    event["detail"]["delivery"].update(timestamp=now, recipients=m["to"])
                else:
                    event["detail"]["send"] = event["detail"].get("send", {})
                entries.append({"EventBusName": "default", "Source": event["source"],
                                "DetailType": event["detail-type"], "Detail": json.dumps(event["detail"]),
                                "Time": datetime.datetime.now(datetime.timezone.utc)})
            answer = self.events.put_events(Entries=entries)
            if answer.get("FailedEntryCount"):
                raise RuntimeError(f"SES feedback not put on the bus: {answer['Entries']}")
            played += 1
        return played


# ------------------------------------------------------------------ the tables


def scan(state: dict, table: str) -> list:
    ddb = aws_local.client("dynamodb", state["endpoint"], state["region"])
    items, start = [], None
    while True:
        page = ddb.scan(TableName=table, **({"ExclusiveStartKey": start} if start else {}))
        items += [{k: DESERIALIZE(v) for k, v in i.items()} for i in page.get("Items", [])]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def table(state: dict, logical: str) -> str:
    return state["resources"][logical]["ref"]


def stored_events(state: dict) -> list:
    return [i for i in scan(state, table(state, "EventsTable")) if i.get("kind") == "event"]


def given_up_messages(events: list) -> dict:
    """{customer id: messages given up}: a message whose outcome stayed
    unknown after its last allowed send (decision 0032: three sends at most;
    SES reported none of them, and the last one's answer was lost too). The
    last `MessageOutcomeUnknown` then has no `settle_by` (no check follows).
    It is counted and alarmed (`MessageOutcomesUnknown`), never sent again,
    so it is not an expected email."""
    streams = collections.defaultdict(list)
    for e in events:
        if str(e["pk"]).startswith("message-"):
            streams[e["pk"]].append(e)
    out: dict = collections.Counter()
    for items in streams.values():
        items.sort(key=lambda i: int(i["sk"]) if str(i["sk"]).isdigit() else 0)
        kinds = [i.get("type") for i in items]
        if "MessageSent" in kinds or "MessageNotAccepted" not in kinds:
            continue
        if kinds[-1] == "MessageOutcomeUnknown" and json.loads(items[-1].get("data") or "{}").get("settle_by") is None:
            customer = next((i.get("customer_id") for i in items if i.get("customer_id")), None)
            out[customer] += 1
    return dict(out)


def journeys_without_timer(state: dict, events: list) -> tuple:
    """Journey instances whose last word is a wait whose schedule is not in
    the stack's schedule groups. (waiting, [instance streams without timer])."""
    streams = collections.defaultdict(list)
    for e in events:
        if str(e["pk"]).startswith("journey-"):
            streams[e["pk"]].append(e)
    scheduler = aws_local.client("scheduler", state["endpoint"], state["region"])
    names = set()
    for v in state["resources"].values():
        if v["type"] == "AWS::Scheduler::ScheduleGroup":
            token = None
            while True:
                page = scheduler.list_schedules(GroupName=v["ref"], **({"NextToken": token} if token else {}))
                names |= {s["Name"] for s in page.get("Schedules", [])}
                token = page.get("NextToken")
                if not token:
                    break
    waiting, orphans = 0, []
    for stream, items in streams.items():
        timer = None
        for e in sorted(items, key=lambda i: int(i["sk"]) if str(i["sk"]).isdigit() else 0):
            data = e.get("data")
            if isinstance(data, str):
                try:
                    data = json.loads(data)
                except json.JSONDecodeError:
                    data = {}
            kind = e.get("type")
            if kind == "JourneyWaitScheduled":
                timer = (data or {}).get("timer_name")
            elif kind in ("JourneyWaitEnded", "TimerFired", "JourneyExited", "JourneyCompleted"):
                timer = None
        if timer:
            waiting += 1
            if timer not in names:
                orphans.append((stream, timer))
    return waiting, orphans


# ------------------------------------------------------------------ crashes


# The names of crm_core::crash's points, read from the one place they are declared.
CRASH_POINTS = tuple(re.findall(r'^pub const [A-Z_]+: &str = "([a-z-]+)";$',
                                (REPO / "shared" / "kernel" / "src" / "crash.rs").read_text(), re.M))


def crashes_in_logs(state_dir: pathlib.Path, functions) -> tuple:
    """The crash points the functions' logs show reached ({point: n},
    {function: n}): each is a JSON line with `crash_point` in its fields."""
    by_point, by_function = collections.Counter(), collections.Counter()
    for function in functions:
        path = state_dir / f"{function}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if '"crash_point"' not in line:
                continue
            try:
                point = json.loads(line).get("fields", {}).get("crash_point")
            except json.JSONDecodeError:
                continue
            if point:
                by_point[point] += 1
                by_function[function] += 1
    return dict(by_point), dict(by_function)


def restart_without_crashes(state: dict, state_dir: pathlib.Path, binaries: dict, endpoint: str) -> None:
    """Starts every function again in its environment without CRM_CRASH_*."""
    lam = state["lambda"]
    for binary, path in binaries.items():
        aws_local.stop([lam["instances"][binary]])
        aws_local.start_instance(state, lam, binary, path, state_dir, endpoint)
    time.sleep(2)


# ------------------------------------------------------------------ crm-ops


def build_crm_ops(state_dir: pathlib.Path) -> str:
    meta = aws_local._cargo_metadata()
    subprocess.run(["cargo", "build", "-q", "-p", "crm-ops"], cwd=REPO, check=True)
    copy = state_dir / "bin" / "crm-ops"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pathlib.Path(meta["target_directory"]) / "debug" / "crm-ops", copy)
    return str(copy)


def crm_ops(binary: str, state: dict, state_dir: pathlib.Path, *args: str, dead_letters: str | None = None,
            timeout: float = 600):
    fns = state["functions"]
    env = {**os.environ}
    for fn in ("relay", "projector", "consent"):
        if fn in fns:
            env.update(fns[fn]["environment"])
    env.update({
        "AWS_ENDPOINT_URL": state["endpoint"], "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": state["region"], "AWS_DEFAULT_REGION": state["region"], "AWS_EC2_METADATA_DISABLED": "true",
        "RELAY_DEAD_LETTER_QUEUE_URL": state["resources"]["RelayDeadLetterQueue"]["QueueUrl"],
    })
    if dead_letters:
        env["DEAD_LETTER_QUEUE_URL"] = dead_letters
    # The functions read the identifier secret from Secrets Manager by ARN (decision 0047);
    # crm-ops takes its value from the environment, as an operator would export it.
    if env.get("IDENTIFIER_HASH_SECRET_ARN") and not env.get("IDENTIFIER_HASH_SECRET"):
        import boto3
        secrets = boto3.client("secretsmanager", endpoint_url=state["endpoint"], region_name=state["region"],
                               aws_access_key_id="test", aws_secret_access_key="test")
        env["IDENTIFIER_HASH_SECRET"] = secrets.get_secret_value(
            SecretId=env["IDENTIFIER_HASH_SECRET_ARN"])["SecretString"]
    out = subprocess.run([binary, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    with open(state_dir / "crm-ops.log", "a") as f:
        f.write(f"$ crm-ops {' '.join(args)}\n-> exit {out.returncode}\n{out.stdout}\n{out.stderr}\n")
    return out


# ------------------------------------------------------------------ the run


class Totals:
    def __init__(self):
        self.counts = []

    def add(self, counts) -> None:
        self.counts.append(counts)
        log(counts.summary().replace("\n", "; "))

    def sum(self, field: str) -> dict:
        out = collections.Counter()
        for c in self.counts:
            out.update(getattr(c, field))
        return dict(out)


def pump(state: dict, totals: Totals, rounds: int = 40, **kw) -> None:
    totals.add(aws_local.pump(state, rounds=rounds, **kw))


def next_timer_due(state: dict) -> datetime.datetime | None:
    """The earliest one-time schedule of the stack's groups not yet fired."""
    scheduler = aws_local.client("scheduler", state["endpoint"], state["region"])
    fired = set(state.get("fired_timers", []))
    earliest = None
    for group in (v["ref"] for v in state["resources"].values() if v["type"] == "AWS::Scheduler::ScheduleGroup"):
        token = None
        while True:
            page = scheduler.list_schedules(GroupName=group, **({"NextToken": token} if token else {}))
            for listed in page.get("Schedules", []):
                if f"{group}/{listed['Name']}" in fired:
                    continue
                at = aws_local._AT.match(scheduler.get_schedule(Name=listed["Name"], GroupName=group)
                                         .get("ScheduleExpression", ""))
                if at:
                    due = datetime.datetime.fromisoformat(at.group(1)).replace(tzinfo=datetime.timezone.utc)
                    earliest = due if earliest is None or due < earliest else earliest
            token = page.get("NextToken")
            if not token:
                break
    return earliest


def settle(state: dict, totals: Totals, ses: SesFeedback) -> int:
    """Pumps without timers until no new email appears, then, past the settle
    window, pumps with the due timers (the channel's settle checks) and once
    more for what they sent; then, while a timer falls due within the longest
    settle window (a resend's check waits twice the first window, decision
    0032), waits for it and pumps again. Every pump round first plays SES's
    feedback for the emails moto's SES took since the last round: AWS sends
    it within seconds, long before a settle window ends, so a check never
    fires before the feedback of an email SES took (a check that did would
    send it again: the duplicate decision 0032 weighs)."""
    played = 0

    def play() -> int:
        nonlocal played
        n = ses.play()
        played += n
        return n

    for _ in range(10):
        pump(state, totals, fire=False, each_round=play)
        if not play():
            break
    time.sleep(SETTLE_SECONDS + 1)
    for _ in range(10):
        pump(state, totals, each_round=play)
        if not play():
            break
    pump(state, totals, each_round=play)
    for _ in range(8):
        due = next_timer_due(state)
        now = datetime.datetime.now(datetime.timezone.utc)
        if due is None or due > now + datetime.timedelta(seconds=SETTLE_SECONDS * 2 + 2):
            break
        time.sleep(max(0.0, (due - now).total_seconds()) + 1)
        pump(state, totals, each_round=play)
        play()
        pump(state, totals, each_round=play)
    return played


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--wave", type=int, default=50,
                        help="stories run before the pipeline is pumped (the queues hold about a wave's messages)")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-consecutive", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="the functions' invoke port (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs)")
    parser.add_argument("--invoke-wait", type=float, default=300,
                        help="how long the pump waits for a function's answer (s), whatever its Timeout")
    parser.add_argument("--crash-rate", type=float, default=0.0,
                        help="probability that a pass through a crash point aborts the function (0: no crash "
                             "points; > 0: the functions are built with the crash-points feature)")
    parser.add_argument("--crash-points", default="all",
                        help=f"comma-separated crash points, or all (default): {','.join(CRASH_POINTS)}")
    parser.add_argument("--units-out", type=pathlib.Path,
                        help="with --rate 0 and no crashes: write the units per stored event as JSON to this file")
    parser.add_argument("--marginal-views", type=int, default=3,
                        help="with --units-out: PageViewed events each customer records after the stories settled, "
                             "measured apart (the cost of an event that starts nothing; 0: no such phase)")
    args = parser.parse_args(argv)
    if args.wave < 1:
        parser.error("--wave must be at least 1")
    measuring = args.rate == 0 and args.crash_rate == 0
    if args.units_out and not measuring:
        parser.error("--units-out measures the run without faults: use it with --rate 0 and --crash-rate 0")
    if not 0 <= args.crash_rate <= 1:
        parser.error("--crash-rate is a probability, from 0 to 1")
    unknown = [p for p in args.crash_points.split(",") if p.strip() not in (*CRASH_POINTS, "all", "")]
    if unknown:
        parser.error(f"--crash-points: no such point {unknown}; known: {','.join(CRASH_POINTS)}")

    # Under the build's target dir (CARGO_TARGET_DIR when set), made if missing.
    state_root = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    state_root.mkdir(parents=True, exist_ok=True)
    state_dir = pathlib.Path(tempfile.mkdtemp(prefix="chaos-", dir=state_root))
    log(f"state and logs in {state_dir}")
    started: list = []
    proxy = None
    failed_checks: list = []
    finished = False
    t0 = time.monotonic()
    try:
        moto_port = aws_local.free_port()
        started.append(aws_local.start_moto(moto_port, state_dir))
        moto = f"http://127.0.0.1:{moto_port}"
        proxy = Proxy(moto, args.seed, args.max_consecutive)
        state = aws_local.create_stack(moto, f"chaos{args.seed}", {
            "ConsumerVisibilityTimeoutSeconds": str(MEASURING_VISIBILITY_TIMEOUT if measuring else VISIBILITY_TIMEOUT),
            "ConsumerMaxReceiveCount": str(MAX_RECEIVE_COUNT),
            "MessageSettleSeconds": str(SETTLE_SECONDS),
        })
        state["moto_pid"] = started[0]
        crashing = args.crash_rate > 0
        binaries = aws_local.build_functions(state, state_dir, "crash-points" if crashing else None)
        crash_env = {"CRM_CRASH_RATE": str(args.crash_rate), "CRM_CRASH_POINTS": args.crash_points,
                     "CRM_CRASH_SEED": str(args.seed)} if crashing else None
        ops = build_crm_ops(state_dir)
        port = args.port or aws_local.free_port()
        state["lambda"] = aws_local.start_functions(state, port, state_dir, binaries, endpoint=proxy.url,
                                                    extra_env=crash_env)
        started = aws_local.pids(state)
        aws_local.save_state(state_dir, state)
        invocations = Invocations(state, args.invoke_wait)
        queue_requests = QueueRequests()
        time.sleep(2)
        proxy.configure(rate=args.rate, reset_stats=True, seed=args.seed, capacity_units=measuring)
        log(f"proxy {proxy.url} -> moto {moto}: rate {args.rate}, seed {args.seed}, "
            f"max consecutive {args.max_consecutive}")
        if crashing:
            log(f"crash points {args.crash_points} at rate {args.crash_rate}, seed {args.seed}")

        # 2. the stories, a wave at a time: the pipeline is pumped after each
        # wave (SES's feedback played every round), so the queues hold about
        # one wave's messages, as steady traffic would, rather than every
        # story's at once (moto's SQS scans a queue's messages on every call).
        totals = Totals()
        ses = SesFeedback(state)
        played_in_waves = [0]

        def play_in_wave() -> int:
            n = ses.play()
            played_in_waves[0] += n
            return n

        api = Api(port, uuid.uuid4().hex[:8], aws_local.exits_of(state, "api"))
        stories = []
        stories_seconds = 0.0
        for n in range(args.stories):
            t_story = time.monotonic()
            story = Story(api, n)
            story.run()
            stories.append(story)
            stories_seconds += time.monotonic() - t_story
            if story.problems:
                log(f"story {n}: {story.problems}")
            if (n + 1) % args.wave == 0 and n + 1 < args.stories:
                pump(state, totals, each_round=play_in_wave)
                log(f"{n + 1} of {args.stories} stories run and pumped")
        log(f"{len(stories)} stories, {api.requests} requests in {stories_seconds:.0f} s")

        # 3. the pipeline, SES's feedback, the settle timers
        # No timer fires before SES's feedback of what was sent is in: SES
        # reports within seconds, the settle window (900 s on AWS, a few
        # seconds here) is there for a feedback that never comes.
        played = played_in_waves[0] + settle(state, totals, ses)
        stats_faulted = proxy.stats()
        measured_snapshot, marginal = None, None
        if measuring and args.units_out:
            def take() -> dict:
                return snapshot(proxy, state, queue_requests, invocations, totals)
            measured_snapshot = take()
            if args.marginal_views:
                marginal = marginal_phase(args, api, stories, state, totals, take)
                log(f"marginal phase: {marginal['events']} events {marginal['events_by_type']}")

        # 4. faults off, one redrive of every dead-letter queue
        proxy.configure(rate=0)
        crashes_faulted = crashes_in_logs(state_dir, binaries)
        if crashing:
            restart_without_crashes(state, state_dir, binaries, proxy.url)
            started = aws_local.pids(state)
        sqs = aws_local.client("sqs", state["endpoint"], state["region"])
        depths_before = {q: sum(d) for q, d in aws_local.queue_depths(state).items()
                         if q in state["dead_letter_queues"]}
        consumer_of_dlq = {c["dead_letter_queue"]: c for c in state["consumers"]}
        redrive_failures = []
        for dlq, depth in depths_before.items():
            if not depth:
                continue
            url = state["dead_letter_queues"][dlq]
            if dlq == "RelayDeadLetterQueue":
                out = crm_ops(ops, state, state_dir, "dlq", "redrive", url, "--to", "relay", "--max", "1000",
                              dead_letters=url)
            elif dlq in consumer_of_dlq:
                out = crm_ops(ops, state, state_dir, "dlq", "redrive", url, "--to-queue",
                              consumer_of_dlq[dlq]["queue_url"], "--max", "1000", dead_letters=url)
            else:
                redrive_failures.append(f"{dlq}: {depth} message(s), no redrive target")
                continue
            if out.returncode != 0:
                redrive_failures.append(f"{dlq}: crm-ops exit {out.returncode}: {out.stderr.strip()[-500:]}")
        played += settle(state, totals, ses)
        depths_after = {q: sum(d) for q, d in aws_local.queue_depths(state).items()}

        # 5. figures and checks
        stats = proxy.stats()
        events = stored_events(state)
        by_type = collections.Counter(e.get("type") for e in events)
        emails = sent_emails(state["endpoint"])
        by_crm_id = collections.Counter(m["crm_id"] for m in emails)
        duplicates = {k: n for k, n in by_crm_id.items() if n > 1}
        no_id = [m for m in emails if not m["crm_id"]]
        per_recipient = collections.defaultdict(list)
        for m in emails:
            for to in m["to"]:
                per_recipient[to.lower()].append(m["subject"])
        given_up = given_up_messages(events)
        wrong_mail = []
        for s in stories:
            if not s.customer_id:
                continue
            got = per_recipient.get(s.email.lower(), [])
            want = 1 + (1 if s.verified else 0) + (1 if s.paid_order else 0) - given_up.get(s.customer_id, 0)
            if len(got) != want or len(set(got)) != len(got):
                wrong_mail.append((s.email, want, got))
        subjects = collections.Counter(m["subject"] for m in emails)
        check = crm_ops(ops, state, state_dir, "check", "--full", "--json", timeout=1800)
        try:
            verified = json.loads(check.stdout)
        except ValueError:
            verified = None
        verified_totals = (verified or {}).get("totals", {})
        waiting, orphans = journeys_without_timer(state, events)
        dlq_left = {q: n for q, n in depths_after.items() if q in state["dead_letter_queues"] and n}
        queues_left = {q: n for q, n in depths_after.items() if q not in state["dead_letter_queues"] and n}
        t = stats["totals"]
        tf = stats_faulted["totals"]
        reported_failed = totals.sum("reported_failed")
        invocation_errors = totals.sum("invocation_errors")
        crashed_invocations = totals.sum("crashed")
        if api.crashed:
            crashed_invocations["api"] = api.crashed
        crashes_by_point, crashes_by_function = crashes_in_logs(state_dir, binaries)
        story_problems = [(s.n, p) for s in stories for p in s.problems]

        figures = collections.OrderedDict([
            ("rate", args.rate), ("seed", args.seed), ("max consecutive", args.max_consecutive),
            ("stories", len(stories)), ("stories with a failed request", len({n for n, _ in story_problems})),
            ("api requests", api.requests), ("api invocations (with client retries)", api.attempts),
            ("api requests retried by the client", api.retried), ("api statuses", dict(api.statuses)),
            ("stories seconds", round(stories_seconds, 1)),
            ("events stored", len(events)), ("events by type", dict(sorted(by_type.items()))),
            ("aws calls forwarded", t["forwarded"]),
            ("faults injected", tf["faulted_before"] + tf["faulted_after"]),
            ("faults before / after", f"{tf['faulted_before']} / {tf['faulted_after']}"),
            ("faults by kind", stats_faulted["faults_by_kind"]),
            ("faults on an SDK's last attempt", tf["faulted_last_attempt"]),
            ("sdk retries", t["retries"]),
            ("transactions replayed by token", t["replayed_by_token"]),
            ("messages reported failed", reported_failed), ("invocation errors", invocation_errors),
            ("crash rate", args.crash_rate), ("crash points", args.crash_points if crashing else "none"),
            ("crashes", crashes_by_point), ("crashes by function", crashes_by_function),
            ("crashes after faults and crash points were turned off", {
                p: n - crashes_faulted[0].get(p, 0) for p, n in crashes_by_point.items()
                if n != crashes_faulted[0].get(p, 0)}),
            ("invocations lost to a crash (seen by the pump)", crashed_invocations),
            ("delivered", totals.sum("delivered")),
            ("invocations", dict(invocations.count)),
            ("longest invocation (s)", dict(invocations.longest)),
            ("invocations over their Timeout", dict(invocations.over_timeout)),
            ("timers fired", sum(c.timers_fired for c in totals.counts)),
            ("dead letters before the redrive", {q: n for q, n in depths_before.items() if n}),
            ("redriven", sum(depths_before.values())),
            ("redrive failures", redrive_failures),
            ("lost (replay and diff: events whose documents are missing or different)",
             verified_totals.get("lost_events")),
            ("documents compared / missing / different / extra",
             f"{verified_totals.get('compared')} / {verified_totals.get('missing')} / "
             f"{verified_totals.get('different')} / {verified_totals.get('extra')}"),
            ("emails sent", len(emails)), ("emails by subject", dict(subjects)),
            ("ses feedback played", played),
            ("duplicate sends", sum(n - 1 for n in duplicates.values())),
            ("emails without X-CRM-Message-Id", len(no_id)),
            ("emails given up after their last allowed send (unknown outcome, alarmed)", sum(given_up.values())),
            ("customers whose emails are not as expected", len(wrong_mail)),
            ("crm-ops check --full exit", check.returncode),
            ("dead letters left after the redrive", dlq_left),
            ("consumer queues not empty", queues_left),
            ("journeys waiting", waiting), ("journeys waiting without a timer", len(orphans)),
            ("seconds", round(time.monotonic() - t0)),
        ])
        if measuring:
            units = units_per_event(args, state, measured_snapshot or snapshot(
                proxy, state, queue_requests, invocations, totals), emails, marginal)
            figures["units per event stored"] = units["per_event"]
            figures["dynamodb units by table"] = {
                t: {"write_units": row["write_units"], "read_units": row["read_units"], "requests": row["requests"],
                    "mean item written (bytes)": round(row["bytes_written"] / max(1, row["items_written"]))}
                for t, row in units["dynamodb_by_table"].items()}
            if args.units_out:
                args.units_out.write_text(json.dumps(units, indent=1) + "\n")
                log(f"units written to {args.units_out}")
        print(json.dumps(figures, indent=2, default=str))
        if duplicates:
            failed_checks.append(f"duplicate sends: {duplicates}")
        if no_id:
            failed_checks.append(f"{len(no_id)} emails without X-CRM-Message-Id: {[m['subject'] for m in no_id]}")
        if wrong_mail:
            failed_checks.append(f"emails not as expected (address, expected count, subjects): {wrong_mail[:10]}")
        if check.returncode != 0 or verified is None:
            shown = [(m.get("kind"), m.get("consumer"), m.get("partition"), m.get("sort"), m.get("event"))
                     for m in (verified or {}).get("mismatches", [])[:10]]
            failed_checks.append(f"crm-ops check --full exit {check.returncode}: "
                                 f"{shown or (check.stdout + check.stderr).strip()[-2000:]}")
        if dlq_left:
            failed_checks.append(f"dead letters left after one redrive: {dlq_left}")
        if redrive_failures:
            failed_checks.append(f"redrive failures: {redrive_failures}")
        if orphans:
            failed_checks.append(f"journeys waiting without a timer: {orphans[:10]}")
        if crashes_by_function != crashed_invocations:
            failed_checks.append(f"crashes in the logs {crashes_by_function} are not the invocations the pump "
                                 f"saw lost to a crash {crashed_invocations}")
        if story_problems:
            failed_checks.append(f"story requests that failed: {story_problems[:10]}")
        if api.failed:
            failed_checks.append(f"api requests still 5xx after {API_ATTEMPTS} attempts: {api.failed[:10]}")
        for problem in failed_checks:
            print(f"FAIL {problem}")
        if failed_checks:
            # What the events table held, for the diagnosis (kept with the logs).
            (state_dir / "events.json").write_text(json.dumps(
                sorted(events, key=lambda e: (str(e.get("pk")), str(e.get("sk")))), indent=1, default=str))
        print(f"chaos: {'FAILED' if failed_checks else 'ok'} (logs: {state_dir})")
        finished = True
        return 1 if failed_checks else 0
    finally:
        aws_local.stop(started)
        if proxy:
            proxy.close()
        if finished and not failed_checks and not args.keep and state_dir.exists():
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
