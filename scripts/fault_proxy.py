#!/usr/bin/env python3
"""A seeded fault-injecting HTTP proxy in front of moto.

Usage (standard library only; any Python 3.9+):

    python scripts/fault_proxy.py --moto http://127.0.0.1:5055 --port 5056 \\
        --seed 7 --rate 0.2 --services dynamodb,kms,events,scheduler,ses \\
        --after-share 0.5 --max-consecutive 2

then point the functions and tests at it: AWS_ENDPOINT_URL=http://127.0.0.1:5056.
With `--port 0` it picks a free port; the first line it prints on stdout is
always `fault-proxy listening on http://HOST:PORT`.

What it does with each request
------------------------------
It names the AWS service and operation of the request:

* JSON protocol (`X-Amz-Target`): `DynamoDB_20120810.PutItem` is dynamodb
  PutItem, `DynamoDBStreams_20120810.*` dynamodbstreams, `TrentService.*` kms,
  `AWSEvents.*` events, `AmazonSQS.*` sqs;
* REST-JSON by path: `/schedules`, `/schedule-groups` (and `/tags/...` signed
  for scheduler) are EventBridge Scheduler, `/v2/email/...` is SES v2 (named
  `ses`, the name SES v2 signs with); the operation comes from a route table
  (`POST /v2/email/outbound-emails` is SendEmail), or is `METHOD /prefix` for
  a route the table does not know;
* query protocol (form body or query string with `Action=`): SES v1, SNS...;
* otherwise the service is the one in the SigV4 `Authorization` header's
  credential scope (`.../<region>/<service>/aws4_request`).

Moto's own `/moto-api/...` paths are always forwarded, never faulted, and
`/fault-proxy/...` is the proxy's own control API (never forwarded).

A request of a chosen service (and operation, with `--operations`: `Op` or
`service:Op`, comma-separated) is faulted
with probability `--rate`; otherwise it is forwarded unchanged (method, path,
query, headers but the hop-by-hop ones, body) and moto's answer is returned
unchanged. A fault is one of two kinds:

* BEFORE (share `1 - --after-share`): the request never reaches moto, so
  nothing happened. The answer is one of `--before-kinds`:
  `throttle` (the service's own throttling error, as AWS sends it, see
  ERRORS), `internal` (HTTP 500) or `unavailable` (HTTP 503).
* AFTER (share `--after-share`): the request is forwarded, moto applies it,
  and its answer is dropped and replaced by one of `--after-kinds`:
  `internal` (HTTP 500), `unavailable` (HTTP 503) or `reset` (the
  connection is reset without any answer). It happened, but the caller
  cannot know. AWS never throttles after doing the work, so `throttle` is
  not an AFTER kind. `--after-operations` limits AFTER faults to some
  operations (a fault drawn as AFTER on another one is a BEFORE fault).

  An SDK retries an AFTER fault (500, 503, reset are transient), so the
  request reaches moto twice: a conditional write then fails against its
  own first attempt (ConditionalCheckFailed, TransactionCanceled), a
  CreateTable with ResourceInUse, a PutEvents publishes twice. Real AWS does
  the same, except that DynamoDB's TransactWriteItems `ClientRequestToken`
  makes a retried transaction idempotent for 10 minutes, and the SDKs (Rust
  and botocore) fill that token in themselves, the same on every attempt of
  a call. moto 5.2.5 ignores the token, so the proxy plays it (MotoUpstream;
  off with `--no-idempotency-tokens` or `idempotency_tokens: false`): a
  transaction repeated with the same token and body after a success is
  answered with the first answer, not applied again. A conditional PutItem
  or UpdateItem has no token: its retry fails its condition on AWS too.
  Create the test resources before turning faults on.

The error answers are those the SDKs classify as retryable. The AWS SDK for
Rust (aws-runtime `retries::classifiers::THROTTLING_ERRORS`, applied to the
error code it reads from `x-amzn-errortype`, else the body's `code`/`__type`
with any `namespace#` prefix removed, and for SQS from `x-amzn-query-error`)
and botocore (`retries.standard.ThrottledRetryableChecker`, same parsing)
both treat ThrottlingException, ProvisionedThroughputExceededException,
TooManyRequestsException, RequestThrottled, LimitExceededException and
Throttling as throttling, and HTTP 500/502/503/504 and a lost connection as
transient. SNS's `Throttled` (HTTP 429) is in neither list: AWS sends it that
way, so it is sent that way here.

Retries and `--max-consecutive`
-------------------------------
`--max-consecutive N` caps the faults in a row that one call receives: after
N faulted attempts the next attempt is forwarded cleanly. An attempt is
recognised as a retry of the same call by its `amz-sdk-invocation-id`
header, which the AWS SDK for Rust and botocore send unchanged on every
attempt of one call (without that header, by service and operation). The
SDKs' default is 3 attempts (Rust standard mode, botocore standard mode;
botocore legacy mode: 5), so:

* the default, 2, lets every call made with the SDK's default retries
  succeed at its third attempt at the latest: faults cost retries, never a
  failed call. A call made with one attempt (the SES and SNS sends, which
  disable SDK retries on purpose) still fails whenever it is faulted;
* 3 or more (0 = no cap) lets a call fail past the SDK's retries: with rate
  r, about r**3 of the calls made with three attempts fail for good, and the
  caller's own recovery (SQS redelivery, the relay's backoff) must cope.

The cap only counts the faults of one call: a caller that retries by making
a new call (a new invocation id) draws again.

Determinism
-----------
Each (service, operation) has its own random stream seeded with
`"<seed>/<service>/<operation>"`, and every eligible request draws exactly
four numbers from it (fault?, after?, kind, variant), whether or not it is
faulted. So for a given seed, the n-th eligible call of an operation always
gets the same decision, however calls of other operations interleave.
Posting a `seed` to the config (even the same one) restarts the streams.

Who made a request
------------------
Every request is counted for its caller too: the application id the SDK
puts in its user agent as `app/<id>` (`x-amz-user-agent`, else
`user-agent`). The AWS SDK for Rust takes it from `AWS_SDK_UA_APP_ID`
(scripts/aws_local.py sets it to each function's binary name), botocore
from `Config(user_agent_appid=...)` or the same variable. A request without
one is `unattributed` (the harness's own boto3 clients).

Moto handles one request at a time
----------------------------------
The proxy serves clients on many threads (ThreadingHTTPServer, HTTP/1.1
keep-alive) but forwards to moto one request at a time under a lock:
moto's backends are not thread-safe (decision 0005).

Control API
-----------
* `GET /fault-proxy/stats`: JSON `{"services": {service: {operation:
  {"forwarded", "faulted_before", "faulted_after", "retries",
  "faulted_last_attempt", "replayed_by_token"}}}, "faults_by_kind": {"before:throttle": n, ...},
  "totals": {...}}`. `forwarded` counts the requests answered with moto's
  own answer; `faulted_before` those answered with a fault without reaching
  moto; `faulted_after` those moto handled whose answer was replaced;
  `replayed_by_token` the TransactWriteItems answered from an earlier one
  with the same ClientRequestToken; `retries` the attempts whose `amz-sdk-request` header says `attempt=2` or
  later; `faulted_last_attempt` the faults on an attempt the header says is
  the SDK's last (`attempt=N; max=N`): that call fails for good. The Rust
  SDK sends `max` on every attempt; botocore only from the second one, so a
  one-attempt botocore call is not counted there. `entries` counts the
  `Entries` of the JSON requests moto handled (EventBridge PutEvents, SQS
  SendMessageBatch and DeleteMessageBatch). With `capacity_units` on,
  `dynamodb_capacity` is `{"tables": {table: {operation: {"requests",
  "write_units", "read_units", "items_written", "items_read",
  "conditional_failures", "bytes_written", "bytes_read"}}}, "totals": {...},
  "unmetered": n}`: the capacity
  units the DynamoDB requests moto handled consume by DynamoDB's rules (see
  CapacityMeter; moto's own `ConsumedCapacity` is a fixed placeholder).
  `by_caller` is `{caller: {"services": {...}, "dynamodb_capacity":
  {"tables", "totals"}}}`: the same counts for each caller (see below).
* `GET /fault-proxy/config`: the configuration in force.
* `POST /fault-proxy/config`: JSON with any of `seed`, `rate`, `services`,
  `after_share`, `operations` and `after_operations` (null for all),
  `max_consecutive`, `before_kinds`, `after_kinds` (lists or
  comma-separated strings), `idempotency_tokens` and `capacity_units`
  (true/false; also `--capacity-units`) and `reset_stats: true`. Answers the new configuration. `{"rate": 0}` stops
  the faults (for the final checks).
"""

import argparse
import base64
import functools
import http.client
import http.server
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Optional
from urllib.parse import parse_qs, urlsplit

DEFAULT_SERVICES = ("dynamodb", "kms", "events", "scheduler", "ses")
BEFORE_KINDS = ("throttle", "internal", "unavailable")
AFTER_KINDS = ("internal", "unavailable", "reset")
CONTROL_PREFIX = "/fault-proxy/"
MOTO_API_PREFIX = "/moto-api/"

# Headers that belong to one connection, not to the request (RFC 9110 7.6.1).
# The request body is always forwarded with its Content-Length.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}

TARGET_PREFIXES = {
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodbstreams",
    "TrentService": "kms",
    "AWSEvents": "events",
    "AmazonSQS": "sqs",
}

_DDB = "com.amazonaws.dynamodb.v20120810#"

# service (or service/protocol) -> fault kind -> variants (status, code, message).
# Codes as the services send them; `ERRORS[...]["throttle"]` codes are all in
# the SDKs' throttling lists (see the module doc), except SNS's Throttled.
ERRORS = {
    "dynamodb": {
        "throttle": [
            (400, _DDB + "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
            (
                400,
                _DDB + "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            ),
        ],
        "internal": [(500, _DDB + "InternalServerError", "Internal server error")],
        "unavailable": [(503, "ServiceUnavailable", "The service is currently unavailable or busy.")],
    },
    "dynamodbstreams": {
        "throttle": [
            (400, _DDB + "LimitExceededException", "Rate exceeded for shard."),
            (400, _DDB + "ThrottlingException", "Rate exceeded."),
        ],
        "internal": [(500, _DDB + "InternalServerError", "Internal server error")],
        "unavailable": [(503, "ServiceUnavailable", "The service is currently unavailable or busy.")],
    },
    "kms": {
        "throttle": [(400, "ThrottlingException", "Rate exceeded")],
        "internal": [(500, "KMSInternalException", "An internal error occurred.")],
        "unavailable": [(503, "ServiceUnavailableException", "Service unavailable.")],
    },
    "events": {
        "throttle": [(400, "ThrottlingException", "Rate exceeded")],
        "internal": [(500, "InternalException", "An internal error occurred.")],
        "unavailable": [(503, "ServiceUnavailableException", "Service unavailable.")],
    },
    # SQS's JSON protocol is query-compatible: the SDKs take the code from
    # `x-amzn-query-error: <code>;<Sender|Receiver>` (see _json_error).
    "sqs": {
        "throttle": [
            (400, "com.amazonaws.sqs#RequestThrottled", "Request is throttled."),
            (400, "com.amazon.coral.availability#ThrottlingException", "Rate exceeded"),
        ],
        "internal": [(500, "com.amazonaws.sqs#InternalFailure", "An internal error occurred.")],
        "unavailable": [(503, "com.amazonaws.sqs#ServiceUnavailable", "Service unavailable.")],
    },
    "scheduler": {
        "throttle": [(429, "ThrottlingException", "Rate exceeded")],
        "internal": [(500, "InternalServerException", "Unexpected error encountered while processing the request.")],
        "unavailable": [(503, "ServiceUnavailableException", "Service unavailable.")],
    },
    "ses": {
        "throttle": [(429, "TooManyRequestsException", "Too many requests have been made to the operation.")],
        "internal": [(500, "InternalServiceErrorException", "The request couldn't be processed.")],
        "unavailable": [(503, "ServiceUnavailableException", "Service unavailable.")],
    },
    "ses/query": {
        "throttle": [(400, "Throttling", "Maximum sending rate exceeded.")],
        "internal": [(500, "InternalFailure", "An internal error occurred.")],
        "unavailable": [(503, "ServiceUnavailable", "Service unavailable.")],
    },
    "sns/query": {
        "throttle": [(429, "Throttled", "Rate exceeded")],
        "internal": [(500, "InternalError", "An internal error occurred.")],
        "unavailable": [(503, "ServiceUnavailable", "Service unavailable.")],
    },
    "*": {
        "throttle": [(400, "ThrottlingException", "Rate exceeded")],
        "internal": [(500, "InternalFailure", "An internal error occurred.")],
        "unavailable": [(503, "ServiceUnavailable", "Service unavailable.")],
    },
}


def _routes(service, table):
    compiled = []
    for method, template, operation in table:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        compiled.append((service, method, re.compile("^" + pattern + "$"), operation))
    return compiled


REST_ROUTES = _routes(
    "scheduler",
    [
        ("GET", "/schedules", "ListSchedules"),
        ("POST", "/schedules/{Name}", "CreateSchedule"),
        ("GET", "/schedules/{Name}", "GetSchedule"),
        ("PUT", "/schedules/{Name}", "UpdateSchedule"),
        ("DELETE", "/schedules/{Name}", "DeleteSchedule"),
        ("GET", "/schedule-groups", "ListScheduleGroups"),
        ("POST", "/schedule-groups/{Name}", "CreateScheduleGroup"),
        ("GET", "/schedule-groups/{Name}", "GetScheduleGroup"),
        ("DELETE", "/schedule-groups/{Name}", "DeleteScheduleGroup"),
    ],
) + _routes(
    "ses",
    [
        ("POST", "/v2/email/outbound-emails", "SendEmail"),
        ("POST", "/v2/email/outbound-bulk-emails", "SendBulkEmail"),
        ("GET", "/v2/email/account", "GetAccount"),
        ("GET", "/v2/email/identities", "ListEmailIdentities"),
        ("POST", "/v2/email/identities", "CreateEmailIdentity"),
        ("GET", "/v2/email/identities/{EmailIdentity}", "GetEmailIdentity"),
        ("DELETE", "/v2/email/identities/{EmailIdentity}", "DeleteEmailIdentity"),
        ("GET", "/v2/email/configuration-sets", "ListConfigurationSets"),
        ("POST", "/v2/email/configuration-sets", "CreateConfigurationSet"),
        ("GET", "/v2/email/configuration-sets/{Name}", "GetConfigurationSet"),
        ("DELETE", "/v2/email/configuration-sets/{Name}", "DeleteConfigurationSet"),
        (
            "GET",
            "/v2/email/configuration-sets/{Name}/event-destinations",
            "GetConfigurationSetEventDestinations",
        ),
        (
            "POST",
            "/v2/email/configuration-sets/{Name}/event-destinations",
            "CreateConfigurationSetEventDestination",
        ),
        (
            "PUT",
            "/v2/email/configuration-sets/{Name}/event-destinations/{Destination}",
            "UpdateConfigurationSetEventDestination",
        ),
        (
            "DELETE",
            "/v2/email/configuration-sets/{Name}/event-destinations/{Destination}",
            "DeleteConfigurationSetEventDestination",
        ),
        ("GET", "/v2/email/contact-lists", "ListContactLists"),
        ("POST", "/v2/email/contact-lists", "CreateContactList"),
        ("GET", "/v2/email/contact-lists/{Name}", "GetContactList"),
        ("DELETE", "/v2/email/contact-lists/{Name}", "DeleteContactList"),
        ("GET", "/v2/email/contact-lists/{Name}/contacts", "ListContacts"),
        ("POST", "/v2/email/contact-lists/{Name}/contacts", "CreateContact"),
        ("GET", "/v2/email/contact-lists/{Name}/contacts/{Email}", "GetContact"),
        ("PUT", "/v2/email/contact-lists/{Name}/contacts/{Email}", "UpdateContact"),
        ("DELETE", "/v2/email/contact-lists/{Name}/contacts/{Email}", "DeleteContact"),
        ("GET", "/v2/email/suppression/addresses", "ListSuppressedDestinations"),
        ("PUT", "/v2/email/suppression/addresses", "PutSuppressedDestination"),
        ("GET", "/v2/email/suppression/addresses/{EmailAddress}", "GetSuppressedDestination"),
        ("DELETE", "/v2/email/suppression/addresses/{EmailAddress}", "DeleteSuppressedDestination"),
    ],
)

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")


@dataclass(frozen=True)
class Call:
    """The AWS call a request makes, as far as the proxy can tell, and who
    made it (`caller_of`)."""

    service: str
    operation: str
    protocol: str  # "json", "rest-json", "query", "moto-api" or "unknown"
    caller: str = "unattributed"


UNATTRIBUTED = "unattributed"
_APP_ID = re.compile(r"(?:^|\s)app/([^\s]+)")


def caller_of(headers) -> str:
    """The application id the SDK put in its user agent (`app/<id>`), or
    UNATTRIBUTED. The AWS SDK for Rust reads it from `AWS_SDK_UA_APP_ID` (or
    `SdkConfig::app_name`) and sends it in `x-amz-user-agent` and
    `user-agent`; botocore from `Config(user_agent_appid=...)` or the same
    variable, in `User-Agent`. `headers` maps lower-case names to values."""
    for name in ("x-amz-user-agent", "user-agent"):
        found = _APP_ID.search(headers.get(name, ""))
        if found:
            return found.group(1)
    return UNATTRIBUTED


def signing_service(headers, query) -> Optional[str]:
    """The service of the SigV4 credential scope (header or presigned query)."""
    found = _SCOPE.search(headers.get("authorization", ""))
    if found:
        return found.group(2)
    credential = query.get("X-Amz-Credential")
    if credential:
        parts = credential[0].split("/")
        if len(parts) == 5 and parts[4] == "aws4_request":
            return parts[3]
    return None


def identify(method: str, path: str, query_string: str, headers, body: bytes) -> Call:
    """Names the service and operation of one request, and its caller.

    `headers` maps lower-case header names to values.
    """
    return replace(_identify(method, path, query_string, headers, body), caller=caller_of(headers))


def _identify(method: str, path: str, query_string: str, headers, body: bytes) -> Call:
    if path.startswith(MOTO_API_PREFIX):
        return Call("moto-api", path, "moto-api")
    query = parse_qs(query_string, keep_blank_values=True)
    scope = signing_service(headers, query)

    target = headers.get("x-amz-target")
    if target and "." in target:
        prefix, operation = target.rsplit(".", 1)
        service = TARGET_PREFIXES.get(prefix) or scope or prefix.lower()
        return Call(service, operation, "json")

    for service, route_method, pattern, operation in REST_ROUTES:
        if route_method == method and pattern.match(path):
            return Call(service, operation, "rest-json")
    segments = [s for s in path.split("/") if s]
    if path.startswith("/v2/email/"):
        return Call("ses", f"{method} /v2/email/{segments[2] if len(segments) > 2 else ''}", "rest-json")
    if segments and segments[0] in ("schedules", "schedule-groups"):
        return Call("scheduler", f"{method} /{segments[0]}", "rest-json")
    if scope == "scheduler" and segments and segments[0] == "tags":
        operation = {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}
        return Call("scheduler", operation.get(method, f"{method} /tags"), "rest-json")

    action = query.get("Action")
    content_type = headers.get("content-type", "")
    if not action and "application/x-www-form-urlencoded" in content_type and body:
        try:
            action = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("Action")
        except UnicodeDecodeError:
            action = None
    if action:
        return Call(scope or "unknown", action[0], "query")

    if scope:
        first = f"/{segments[0]}" if segments else "/"
        return Call(scope, f"{method} {first}", "rest-json")
    return Call("unknown", f"{method} {path}", "unknown")


@dataclass(frozen=True)
class Config:
    seed: int = 0
    rate: float = 0.2
    services: tuple = DEFAULT_SERVICES
    after_share: float = 0.5
    operations: Optional[tuple] = None  # "Op" or "service:Op"; None = all
    after_operations: Optional[tuple] = None  # where AFTER faults may fall; None = all
    max_consecutive: int = 2  # 0 = no cap
    before_kinds: tuple = BEFORE_KINDS
    after_kinds: tuple = ("internal", "reset")
    idempotency_tokens: bool = True  # play TransactWriteItems ClientRequestToken
    capacity_units: bool = False  # count DynamoDB capacity units (CapacityMeter)

    def validated(self) -> "Config":
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        if not 0.0 <= self.after_share <= 1.0:
            raise ValueError("after_share must be within [0, 1]")
        if self.max_consecutive < 0:
            raise ValueError("max_consecutive must be 0 (no cap) or more")
        if not self.before_kinds or any(k not in BEFORE_KINDS for k in self.before_kinds):
            raise ValueError(f"before_kinds must be some of {', '.join(BEFORE_KINDS)}")
        if not self.after_kinds or any(k not in AFTER_KINDS for k in self.after_kinds):
            raise ValueError(f"after_kinds must be some of {', '.join(AFTER_KINDS)}")
        return self


def _names(value) -> tuple:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of names or a comma-separated string, got {value!r}")


def config_update(config: Config, changes: dict) -> Config:
    """A new configuration with the JSON `changes` applied."""
    updates = {}
    for key, value in changes.items():
        if key == "seed":
            updates[key] = int(value)
        elif key in ("rate", "after_share"):
            updates[key] = float(value)
        elif key == "max_consecutive":
            updates[key] = int(value)
        elif key in ("idempotency_tokens", "capacity_units"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            updates[key] = value
        elif key in ("services", "before_kinds", "after_kinds"):
            updates[key] = _names(value)
        elif key in ("operations", "after_operations"):
            updates[key] = None if value is None else _names(value)
        else:
            raise ValueError(f"unknown option {key!r}")
    return replace(config, **updates).validated()


def _listed(call: Call, operations: Optional[tuple]) -> bool:
    if operations is None:
        return True
    return call.operation in operations or f"{call.service}:{call.operation}" in operations


@dataclass(frozen=True)
class Fault:
    after: bool
    kind: str
    variant: float


def _attempt(headers):
    """(attempt, max) from the SDKs' `amz-sdk-request: attempt=2; max=3`."""
    values = {}
    for part in headers.get("amz-sdk-request", "").split(";"):
        name, _, value = part.strip().partition("=")
        if value.isdigit():
            values[name] = int(value)
    return values.get("attempt"), values.get("max")


@dataclass
class OperationStats:
    forwarded: int = 0
    faulted_before: int = 0
    faulted_after: int = 0
    retries: int = 0
    faulted_last_attempt: int = 0
    replayed_by_token: int = 0
    entries: int = 0  # the `Entries` of the requests moto handled (PutEvents, SQS batches)


@dataclass
class Injector:
    """Decides, under one lock, which requests are faulted, and counts."""

    config: Config
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _streams: dict = field(default_factory=dict)
    _streaks: OrderedDict = field(default_factory=OrderedDict)
    _stats: dict = field(default_factory=dict)
    _by_caller: dict = field(default_factory=dict)  # caller -> service -> operation -> OperationStats
    _kinds: dict = field(default_factory=dict)
    capacity: "CapacityMeter" = field(default_factory=lambda: CapacityMeter())

    MAX_STREAKS = 100_000

    def reconfigure(self, changes: dict) -> Config:
        with self._lock:
            self.config = config_update(self.config, {k: v for k, v in changes.items() if k != "reset_stats"})
            if "seed" in changes:
                self._streams.clear()
                self._streaks.clear()
            if changes.get("reset_stats"):
                self._stats.clear()
                self._by_caller.clear()
                self._kinds.clear()
                self.capacity.reset()
            return self.config

    def _eligible(self, call: Call) -> bool:
        config = self.config
        if call.protocol == "moto-api" or call.service not in config.services:
            return False
        return _listed(call, config.operations)

    def _counters(self, call: Call) -> tuple:
        """The call's OperationStats: overall and its caller's (under the lock)."""
        overall = self._stats.setdefault(call.service, {}).setdefault(call.operation, OperationStats())
        mine = self._by_caller.setdefault(call.caller, {}).setdefault(call.service, {}).setdefault(
            call.operation, OperationStats())
        return overall, mine

    def decide(self, call: Call, headers) -> Optional[Fault]:
        """The fault for this request, or None to forward it cleanly."""
        with self._lock:
            counters = self._counters(call)
            attempt, max_attempts = _attempt(headers)
            if attempt is not None and attempt > 1:
                for stats in counters:
                    stats.retries += 1
            if not self._eligible(call):
                return None
            config = self.config
            key = (call.service, call.operation)
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = random.Random(f"{config.seed}/{call.service}/{call.operation}")
            u_fault, u_after, u_kind, u_variant = (stream.random() for _ in range(4))
            streak_key = (call.service, call.operation, headers.get("amz-sdk-invocation-id"))
            streak = self._streaks.get(streak_key, 0)
            capped = config.max_consecutive and streak >= config.max_consecutive
            if u_fault >= config.rate or capped:
                self._streaks.pop(streak_key, None)
                return None
            self._streaks[streak_key] = streak + 1
            self._streaks.move_to_end(streak_key)
            while len(self._streaks) > self.MAX_STREAKS:
                self._streaks.popitem(last=False)
            after = u_after < config.after_share and _listed(call, config.after_operations)
            kinds = config.after_kinds if after else config.before_kinds
            kind = kinds[min(int(u_kind * len(kinds)), len(kinds) - 1)]
            last = attempt is not None and max_attempts is not None and attempt >= max_attempts
            for stats in counters:
                if after:
                    stats.faulted_after += 1
                else:
                    stats.faulted_before += 1
                stats.faulted_last_attempt += int(last)
            label = f"{'after' if after else 'before'}:{kind}"
            self._kinds[label] = self._kinds.get(label, 0) + 1
            return Fault(after, kind, u_variant)

    def count_forwarded(self, call: Call):
        with self._lock:
            for stats in self._counters(call):
                stats.forwarded += 1

    def count_entries(self, call: Call, entries: int):
        with self._lock:
            for stats in self._counters(call):
                stats.entries += entries

    def count_replayed(self, call: Call):
        with self._lock:
            for stats in self._counters(call):
                stats.replayed_by_token += 1

    def snapshot(self) -> dict:
        with self._lock:
            services = {
                service: {operation: asdict(s) for operation, s in sorted(ops.items())}
                for service, ops in sorted(self._stats.items())
            }
            totals = OperationStats()
            for ops in self._stats.values():
                for s in ops.values():
                    totals.forwarded += s.forwarded
                    totals.faulted_before += s.faulted_before
                    totals.faulted_after += s.faulted_after
                    totals.retries += s.retries
                    totals.faulted_last_attempt += s.faulted_last_attempt
                    totals.replayed_by_token += s.replayed_by_token
                    totals.entries += s.entries
            capacity = self.capacity.snapshot()
            by_caller = {
                caller: {
                    "services": {
                        service: {operation: asdict(s) for operation, s in sorted(ops.items())}
                        for service, ops in sorted(by_service.items())
                    },
                }
                for caller, by_service in sorted(self._by_caller.items())
            }
            for caller, units in capacity["by_caller"].items():
                by_caller.setdefault(caller, {"services": {}})["dynamodb_capacity"] = units
            return {
                "services": services,
                "faults_by_kind": dict(sorted(self._kinds.items())),
                "totals": asdict(totals),
                "dynamodb_capacity": capacity,
                "by_caller": dict(sorted(by_caller.items())),
                "config": config_json(self.config),
            }


def config_json(config: Config) -> dict:
    out = asdict(config)
    for key in ("services", "before_kinds", "after_kinds", "operations", "after_operations"):
        if out[key] is not None:
            out[key] = list(out[key])
    return out


def error_answer(call: Call, kind: str, variant: float, request_headers) -> tuple:
    """(status, headers, body) of a `kind` fault, in the call's protocol."""
    table = ERRORS.get(f"{call.service}/{call.protocol}") or ERRORS.get(call.service) or ERRORS["*"]
    if call.protocol == "query" and f"{call.service}/query" not in ERRORS:
        table = ERRORS["*"]
    variants = table[kind]
    status, code, message = variants[min(int(variant * len(variants)), len(variants) - 1)]
    request_id = str(uuid.uuid4())
    short_code = code.rsplit("#", 1)[-1]
    if call.protocol == "json":
        headers = {
            "Content-Type": request_headers.get("content-type") or "application/x-amz-json-1.0",
            "x-amzn-RequestId": request_id,
        }
        if call.service == "sqs":
            headers["x-amzn-query-error"] = f"{short_code};{'Sender' if status < 500 else 'Receiver'}"
        body = json.dumps({"__type": code, "message": message}).encode()
    elif call.protocol == "query":
        headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
        body = (
            "<ErrorResponse><Error>"
            f"<Type>{'Sender' if status < 500 else 'Receiver'}</Type>"
            f"<Code>{short_code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    else:
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": short_code,
        }
        body = json.dumps({"message": message}).encode()
    return status, headers, body


def request_entries(body: bytes) -> int:
    """The number of `Entries` of a JSON request (PutEvents, SQS's batches)."""
    try:
        entries = json.loads(body).get("Entries")
    except (ValueError, AttributeError):
        return 0
    return len(entries) if isinstance(entries, list) else 0


def transaction_token(call: Call, body: bytes) -> Optional[str]:
    """The ClientRequestToken of a DynamoDB TransactWriteItems request."""
    if call.service != "dynamodb" or call.operation != "TransactWriteItems":
        return None
    try:
        token = json.loads(body).get("ClientRequestToken")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) and token else None


# ------------------------------------------------------------------ capacity units


def number_size(text: str) -> int:
    """DynamoDB's size of a number: 1 byte per two significant digits, plus 1."""
    mantissa = text.strip().lstrip("+-").lower().split("e", 1)[0]
    digits = mantissa.replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def value_size(value: dict) -> int:
    """DynamoDB's size of one attribute value (without its name), by the
    developer guide's "Item sizes and formats": strings their UTF-8 bytes,
    numbers `number_size`, binary their raw bytes, null and booleans 1 byte,
    a list or map 3 bytes plus 1 byte and the size of each element (and, in
    a map, each element's name), a set the sum of its elements."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode("utf-8"))
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return len(base64.b64decode(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) for b in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + 1 + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: dict) -> int:
    """The size DynamoDB bills an item at: its attribute names' UTF-8 bytes
    plus their values' sizes."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """1 write unit per KB (rounded up), at least 1."""
    return max(1, -(-size // 1024))


def read_units(size: int, consistent: bool) -> float:
    """1 read unit per 4 KB (rounded up, at least 1) strongly consistent, half eventually."""
    units = max(1, -(-size // 4096))
    return float(units) if consistent else units / 2


@dataclass
class TableUnits:
    requests: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    items_written: int = 0
    items_read: int = 0
    conditional_failures: int = 0  # failed conditions and cancelled transactions (units still counted)
    bytes_written: int = 0  # the sizes the write units were counted from
    bytes_read: int = 0  # the sizes the read units were counted from


class CapacityMeter:
    """Counts the capacity units the DynamoDB requests forwarded to moto
    consume by DynamoDB's rules (moto's `ConsumedCapacity` is a fixed
    placeholder). It sees each request and its answer, and reads from moto
    what the body does not say, with its own consistent GetItem, Query and
    DescribeTable calls (never counted), under the upstream's lock so that
    nothing changes in between:

    * writes, 1 unit per KB of each item, at least 1: PutItem the larger of
      the item it replaces (read before) and the new one; UpdateItem the
      larger of the item before and after (both read); DeleteItem the item
      deleted; BatchWriteItem per item (unprocessed items not counted);
      TransactWriteItems twice each Put, Update, Delete and ConditionCheck
      (the check at its item's size). A write whose condition fails, and a
      cancelled transaction, are counted as if they had been applied: an
      upper bound (DynamoDB bills a failed conditional write, the docs do
      not say exactly how much); they are also counted in
      `conditional_failures`;
    * reads, 1 unit per 4 KB rounded up (half when eventually consistent,
      the default), at least 1 (or 0.5) even when nothing is found: GetItem
      the whole item (a ProjectionExpression does not lower the cost: the
      item is read from moto whole); Query and Scan the sum of the items
      evaluated (before any filter, whole, re-read from moto when the request
      projects or filters), rounded once; BatchGetItem each key as a GetItem;
      TransactGetItems twice each item, strongly consistent.

    Counts are kept per table and operation."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tables: dict = {}
        self._by_caller: dict = {}  # caller -> table -> operation -> TableUnits
        self._key_schemas: dict = {}
        self.unmetered = 0  # requests the meter could not read (counted, never raised)

    def reset(self):
        with self._lock:
            self._tables.clear()
            self._by_caller.clear()
            self.unmetered = 0

    def _add(self, table, operation, write=0.0, read=0.0, written=0, read_items=0, failed=False, request=False,
             size=0, caller=UNATTRIBUTED):
        with self._lock:
            for tables in (self._tables, self._by_caller.setdefault(caller, {})):
                units = tables.setdefault(table, {}).setdefault(operation, TableUnits())
                units.requests += int(request)
                units.write_units += write
                units.read_units += read
                units.items_written += written
                units.items_read += read_items
                units.conditional_failures += int(failed)
                if write:
                    units.bytes_written += size
                else:
                    units.bytes_read += size

    @staticmethod
    def _tables_json(by_table) -> tuple:
        tables = {table: {op: asdict(u) for op, u in sorted(ops.items())} for table, ops in sorted(by_table.items())}
        totals = TableUnits()
        for ops in by_table.values():
            for u in ops.values():
                for name in ("requests", "write_units", "read_units", "items_written", "items_read",
                             "conditional_failures", "bytes_written", "bytes_read"):
                    setattr(totals, name, getattr(totals, name) + getattr(u, name))
        return tables, asdict(totals)

    def snapshot(self) -> dict:
        """{"tables", "totals", "unmetered", "by_caller": {caller: {"tables", "totals"}}}."""
        with self._lock:
            tables, totals = self._tables_json(self._tables)
            by_caller = {}
            for caller, by_table in sorted(self._by_caller.items()):
                caller_tables, caller_totals = self._tables_json(by_table)
                by_caller[caller] = {"tables": caller_tables, "totals": caller_totals}
            return {"tables": tables, "totals": totals, "unmetered": self.unmetered, "by_caller": by_caller}

    # -- what the meter asks moto

    def key_of(self, moto, table, item):
        schema = self._key_schemas.get(table)
        if schema is None:
            described = moto("DescribeTable", {"TableName": table}) or {}
            schema = [k["AttributeName"] for k in described.get("Table", {}).get("KeySchema", [])]
            if schema:
                self._key_schemas[table] = schema
        return {name: item[name] for name in schema if name in item}

    @staticmethod
    def current(moto, table, key):
        got = moto("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}) or {}
        return got.get("Item")

    # -- before and after the request

    def writes_of(self, operation, request, moto):
        """[(table, key, new item or None, factor)] of a write request (new
        item None: known only after the request, or deleted)."""
        out = []
        if operation == "PutItem":
            table = request["TableName"]
            out.append((table, self.key_of(moto, table, request["Item"]), request["Item"], 1))
        elif operation in ("UpdateItem", "DeleteItem"):
            out.append((request["TableName"], request["Key"], None, 1))
        elif operation == "BatchWriteItem":
            for table, requests in request.get("RequestItems", {}).items():
                for r in requests:
                    if "PutRequest" in r:
                        item = r["PutRequest"]["Item"]
                        out.append((table, self.key_of(moto, table, item), item, 1))
                    elif "DeleteRequest" in r:
                        out.append((table, r["DeleteRequest"]["Key"], None, 1))
        elif operation == "TransactWriteItems":
            for action in request.get("TransactItems", []):
                (kind, spec), = action.items()
                table = spec["TableName"]
                if kind == "Put":
                    out.append((table, self.key_of(moto, table, spec["Item"]), spec["Item"], 2))
                else:
                    out.append((table, spec["Key"], None, 2))
        return out

    def before(self, operation, request, moto):
        """What the meter needs from before the request: the items it writes, as they are."""
        if operation not in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"):
            return None
        return [(t, k, new, f, self.current(moto, t, k)) for t, k, new, f in self.writes_of(operation, request, moto)]

    def after(self, operation, request, status, answer, moto, before, caller=UNATTRIBUTED):
        """Counts the request's units (for `caller`, and overall) once moto answered."""
        add = functools.partial(self._add, caller=caller)
        try:
            request = json.loads(request or b"{}")
            answer = json.loads(answer or b"{}")
        except ValueError:
            return
        error = str(answer.get("__type", "")).rsplit("#", 1)[-1] if status >= 400 else ""
        failed = error in ("ConditionalCheckFailedException", "TransactionCanceledException")
        if status >= 400 and not failed:
            return  # refused before any work (validation, missing table...): nothing consumed
        if before is not None:
            return self._writes(operation, request, answer, moto, before, failed, add)
        consistent = bool(request.get("ConsistentRead"))
        if operation == "GetItem":
            table = request["TableName"]
            item = answer.get("Item")
            if item is not None and (request.get("ProjectionExpression") or request.get("AttributesToGet")):
                item = self.current(moto, table, request["Key"])
            size = item_size(item) if item else 0
            add(table, operation, read=read_units(size, consistent), read_items=int(item is not None),
                      request=True, size=size)
        elif operation in ("Query", "Scan"):
            table = request["TableName"]
            items = answer.get("Items", [])
            if any(request.get(k) for k in ("ProjectionExpression", "FilterExpression", "AttributesToGet",
                                           "QueryFilter", "ScanFilter", "Select")):
                items = self._evaluated(operation, request, moto)
            size = sum(item_size(i) for i in items)
            add(table, operation, read=read_units(size, consistent), read_items=len(items), request=True,
                      size=size)
        elif operation == "BatchGetItem":
            found = {}
            for table, items in answer.get("Responses", {}).items():
                found[table] = items
            for table, spec in request.get("RequestItems", {}).items():
                unprocessed = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                projected = spec.get("ProjectionExpression") or spec.get("AttributesToGet")
                items = found.get(table, [])
                if projected:
                    items = [i for i in (self.current(moto, table, k) for k in spec["Keys"] if k not in unprocessed)
                             if i is not None]
                missing = max(0, len(spec["Keys"]) - len(unprocessed) - len(items))
                read = sum(read_units(item_size(i), bool(spec.get("ConsistentRead"))) for i in items)
                read += missing * read_units(0, bool(spec.get("ConsistentRead")))
                add(table, operation, read=read, read_items=len(items), size=sum(item_size(i) for i in items))
            first = next(iter(request.get("RequestItems", {})), None)
            if first is not None:
                add(first, operation, request=True)
        elif operation == "TransactGetItems":
            seen = set()
            for action in request.get("TransactItems", []):
                spec = action["Get"]
                table = spec["TableName"]
                item = self.current(moto, table, spec["Key"])
                size = item_size(item) if item else 0
                add(table, operation, read=2 * read_units(size, True), read_items=int(item is not None),
                          request=table not in seen, size=size)
                seen.add(table)

    def _writes(self, operation, request, answer, moto, before, failed, add):
        seen = set()
        unprocessed = set()
        if operation == "BatchWriteItem":
            for table, requests in answer.get("UnprocessedItems", {}).items():
                for r in requests:
                    spec = r.get("PutRequest", {}).get("Item") or r.get("DeleteRequest", {}).get("Key") or {}
                    unprocessed.add((table, json.dumps(self.key_of(moto, table, spec), sort_keys=True)))
        for table, key, new, factor, old in before:
            if (table, json.dumps(key, sort_keys=True)) in unprocessed:
                continue
            if new is None and not failed:
                new = self.current(moto, table, key)  # after an update (None after a delete)
            size = max(item_size(old) if old else 0, item_size(new) if new else 0)
            add(table, operation, write=factor * write_units(size), written=1, request=table not in seen,
                      size=size)
            seen.add(table)
        if failed and before:
            add(before[0][0], operation, failed=True)

    def _evaluated(self, operation, request, moto):
        """The items a Query or Scan evaluated, whole: the request again
        without its projection and filter."""
        again = {k: v for k, v in request.items()
                 if k not in ("ProjectionExpression", "FilterExpression", "AttributesToGet", "QueryFilter",
                              "ScanFilter", "Select", "ExpressionAttributeNames", "ExpressionAttributeValues")}
        used = request.get("KeyConditionExpression", "") + " "
        names = {k: v for k, v in request.get("ExpressionAttributeNames", {}).items() if re.search(re.escape(k) + r"\b", used)}
        values = {k: v for k, v in request.get("ExpressionAttributeValues", {}).items()
                  if re.search(re.escape(k) + r"\b", used)}
        if names:
            again["ExpressionAttributeNames"] = names
        if values:
            again["ExpressionAttributeValues"] = values
        return (moto(operation, again) or {}).get("Items", [])


@dataclass
class RememberedTransaction:
    body: bytes
    answer: tuple
    at: float


class MotoUpstream:
    """Forwards requests to moto one at a time.

    It also plays DynamoDB's TransactWriteItems idempotency, which moto
    5.2.5 ignores: a transaction repeated with the same `ClientRequestToken`
    and the same parameters within 10 minutes of a successful one is not
    applied again but answered with the first answer; with other parameters
    it is refused with IdempotentParameterMismatchException. So an SDK retry
    after an AFTER fault behaves as on AWS.
    """

    TOKEN_WINDOW_SECONDS = 600.0

    def __init__(self, url: str, timeout: float = 120.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"moto URL must be http://host:port, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._lock = threading.Lock()
        self._transactions: OrderedDict = OrderedDict()

    def forward(self, method, target, headers, body, token=None, meter=None, operation=None,
                caller=UNATTRIBUTED):
        """(status, reason, [(name, value)], body, replayed) of moto's answer.

        With a `meter` (a CapacityMeter), the DynamoDB `operation`'s capacity
        units are counted, for `caller` too (a transaction replayed by its
        token is not)."""
        with self._lock:
            if token is None:
                return self._metered(method, target, headers, body, meter, operation, caller) + (False,)
            now = time.monotonic()
            while self._transactions:
                oldest = next(iter(self._transactions.values()))
                if now - oldest.at < self.TOKEN_WINDOW_SECONDS:
                    break
                self._transactions.popitem(last=False)
            remembered = self._transactions.get(token)
            if remembered is not None and remembered.body == body:
                return remembered.answer + (True,)
            if remembered is not None:
                mismatch = json.dumps(
                    {
                        "__type": _DDB + "IdempotentParameterMismatchException",
                        "message": "The request uses the same client token as a previous, but non-identical request.",
                    }
                ).encode()
                headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", str(uuid.uuid4()))]
                return 400, "Bad Request", headers, mismatch, False
            answer = self._metered(method, target, headers, body, meter, operation, caller)
            if 200 <= answer[0] < 300:
                self._transactions[token] = RememberedTransaction(body, answer, now)
            return answer + (False,)

    def _metered(self, method, target, headers, body, meter, operation, caller=UNATTRIBUTED):
        if meter is None:
            return self._forward(method, target, headers, body)

        def moto(op, payload):
            return self._dynamodb(op, payload, headers)

        try:
            before = meter.before(operation, json.loads(body or b"{}"), moto)
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            meter.unmetered += 1
            return self._forward(method, target, headers, body)
        answer = self._forward(method, target, headers, body)
        try:
            meter.after(operation, body, answer[0], answer[3], moto, before, caller)
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            meter.unmetered += 1
        return answer

    def _dynamodb(self, operation, payload, headers):
        """moto's answer (JSON) to a DynamoDB call of the meter's own, signed
        as the request it measures (moto reads the region from it), or None."""
        own = [("X-Amz-Target", f"DynamoDB_20120810.{operation}"), ("Content-Type", "application/x-amz-json-1.0")]
        own += [(n, v) for n, v in headers if n.lower() in ("host", "authorization", "x-amz-date")]
        status, _, _, data = self._forward("POST", "/", own, json.dumps(payload).encode())
        return json.loads(data) if status == 200 else None

    def _forward(self, method, target, headers, body):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.putheader("Connection", "close")
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            connection.close()


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"
    # Headers and body go out in one write; with Nagle's algorithm on, the
    # client's delayed ACK would hold every small answer for 40 ms.
    disable_nagle_algorithm = True
    injector: Injector
    upstream: MotoUpstream
    verbose = False

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        if self.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status, headers, body, reason=None, head=False):
        self.send_response_only(status, reason)
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                if head:
                    self.send_header(name, value)
                    has_length = True
                continue
            if lower in HOP_BY_HOP:
                continue
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if not head and body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def _json(self, status, value):
        body = json.dumps(value, indent=1).encode()
        self._answer(status, [("Content-Type", "application/json")], body)

    def _reset(self):
        """Drops the connection with a TCP reset and no answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()  # the reset goes out once rfile/wfile are closed

    def _control(self, method, path, body):
        if path == CONTROL_PREFIX + "stats" and method == "GET":
            return self._json(200, self.injector.snapshot())
        if path == CONTROL_PREFIX + "config" and method == "GET":
            return self._json(200, config_json(self.injector.config))
        if path == CONTROL_PREFIX + "config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                config = self.injector.reconfigure(changes)
            except (ValueError, TypeError) as error:
                return self._json(400, {"error": str(error)})
            return self._json(200, config_json(config))
        return self._json(404, {"error": f"no such control endpoint: {method} {path}"})

    def _handle(self):
        method = self.command
        body = self._read_body()
        parts = urlsplit(self.path)
        path = parts.path or "/"
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path, body)
        headers = {name.lower(): value for name, value in self.headers.items()}
        call = identify(method, path, parts.query, headers, body)
        fault = self.injector.decide(call, headers)
        head = method == "HEAD"

        if fault is not None and not fault.after:
            if self.verbose:
                self.log_message("fault before %s %s: %s", call.service, call.operation, fault.kind)
            status, answer_headers, answer = error_answer(call, fault.kind, fault.variant, headers)
            return self._answer(status, list(answer_headers.items()), answer, head=head)

        target = path + (f"?{parts.query}" if parts.query else "")
        try:
            config = self.injector.config
            status, reason, moto_headers, answer, replayed = self.upstream.forward(
                method,
                target,
                list(self.headers.items()),
                body,
                transaction_token(call, body) if config.idempotency_tokens else None,
                self.injector.capacity if config.capacity_units and call.service == "dynamodb" else None,
                call.operation,
                call.caller,
            )
        except OSError as error:
            return self._answer(
                502,
                [("Content-Type", "text/plain")],
                f"fault-proxy: moto unreachable: {error}".encode(),
            )

        if replayed:
            self.injector.count_replayed(call)
        elif call.protocol == "json" and body[:1] == b"{":
            entries = request_entries(body)
            if entries:
                self.injector.count_entries(call, entries)
        if fault is None:
            self.injector.count_forwarded(call)
            return self._answer(status, moto_headers, answer, reason=reason, head=head)
        if self.verbose:
            self.log_message("fault after %s %s: %s (moto said %s)", call.service, call.operation, fault.kind, status)
        if fault.kind == "reset":
            return self._reset()
        status, answer_headers, answer = error_answer(call, fault.kind, fault.variant, headers)
        return self._answer(status, list(answer_headers.items()), answer, head=head)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class FaultProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(host, port, moto_url, config, verbose=False) -> FaultProxy:
    upstream = MotoUpstream(moto_url)
    handler = type(
        "BoundProxyHandler",
        (ProxyHandler,),
        {"injector": Injector(config.validated()), "upstream": upstream, "verbose": verbose},
    )
    return FaultProxy((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--moto", default="http://127.0.0.1:5055", help="moto's URL (default %(default)s)")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5056, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.2, help="share of eligible calls faulted")
    parser.add_argument("--services", default=",".join(DEFAULT_SERVICES))
    parser.add_argument("--after-share", type=float, default=0.5, help="share of faults that are AFTER faults")
    parser.add_argument("--operations", default=None, help="allow-list: Op or service:Op, comma-separated")
    parser.add_argument(
        "--max-consecutive",
        type=int,
        default=2,
        help="faults in a row one call can get (0: no cap; default 2, below the SDKs' 3 attempts)",
    )
    parser.add_argument(
        "--after-operations",
        default=None,
        help="AFTER faults only on these (Op or service:Op); a fault drawn as AFTER elsewhere is BEFORE",
    )
    parser.add_argument("--before-kinds", default=",".join(BEFORE_KINDS))
    parser.add_argument("--after-kinds", default="internal,reset")
    parser.add_argument(
        "--no-idempotency-tokens",
        action="store_true",
        help="forward repeated TransactWriteItems ClientRequestTokens to moto (which applies them again)",
    )
    parser.add_argument(
        "--capacity-units",
        action="store_true",
        help="count the DynamoDB capacity units of the requests (stats: dynamodb_capacity)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request and fault to stderr")
    args = parser.parse_args(argv)
    try:
        config = Config(
            seed=args.seed,
            rate=args.rate,
            services=_names(args.services),
            after_share=args.after_share,
            operations=None if args.operations is None else _names(args.operations),
            after_operations=None if args.after_operations is None else _names(args.after_operations),
            max_consecutive=args.max_consecutive,
            before_kinds=_names(args.before_kinds),
            after_kinds=_names(args.after_kinds),
            idempotency_tokens=not args.no_idempotency_tokens,
            capacity_units=args.capacity_units,
        ).validated()
        server = serve(args.host, args.port, args.moto, config, args.verbose)
    except ValueError as error:
        parser.error(str(error))
    host, port = server.server_address[:2]
    print(f"fault-proxy listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
