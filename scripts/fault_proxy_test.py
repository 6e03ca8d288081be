#!/usr/bin/env python3
"""Tests of scripts/fault_proxy.py against a real moto, with boto3.

Usage:

    .venv/bin/python scripts/fault_proxy_test.py            # starts its own moto
    .venv/bin/python scripts/fault_proxy_test.py --moto http://127.0.0.1:5055

By default it starts moto itself (scripts/moto_server.py on a free port, so it
works in CI and touches no shared moto); `--moto URL` uses a running one
instead (every resource name is unique). It then starts the proxy on a free
port and drives it with boto3, most calls with retries off so that each
call is one request. Note: botocore's `retries={"max_attempts": N}` counts
the retries after the first attempt (N=1 still retries once);
`total_max_attempts` counts all attempts, so retries off is
`Config(retries={"total_max_attempts": 1})`.
Exits non-zero if any test fails.
"""

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.retries.standard import ThrottledRetryableChecker

SCRIPTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
import fault_proxy  # noqa: E402
REGION = "us-east-1"

# aws-runtime 1.10 src/retries/classifiers.rs THROTTLING_ERRORS: the codes the
# AWS SDK for Rust retries as throttling (ours must be among them).
RUST_THROTTLING_ERRORS = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
}
BOTOCORE_THROTTLING_ERRORS = set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, process, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


class Env:
    def __init__(self, moto_url, proxy_url):
        self.moto = moto_url
        self.proxy = proxy_url
        self.tag = uuid.uuid4().hex[:8]

    def client(self, service, attempts=1, mode="standard", direct=False, app_id=None):
        return boto3.client(
            service,
            endpoint_url=self.moto if direct else self.proxy,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": attempts, "mode": mode}, user_agent_appid=app_id),
        )

    def control(self, method, path, body=None):
        request = urllib.request.Request(
            self.proxy + "/fault-proxy/" + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def configure(self, **changes):
        return self.control("POST", "config", changes)

    def stats(self):
        return self.control("GET", "stats")

    def op_stats(self, service, operation):
        return self.stats()["services"].get(service, {}).get(operation, {})


def error_of(call):
    """(code, HTTP status) of the ClientError `call` raises, or None if it succeeds."""
    try:
        call()
    except botocore.exceptions.ClientError as error:
        return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]
    return None


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def faults_only(env, **changes):
    """Every eligible call faulted, no cap, statistics reset."""
    options = dict(rate=1, max_consecutive=0, operations=None, after_operations=None, reset_stats=True, seed=1)
    options.update(changes)
    return env.configure(**options)


def new_table(env):
    name = f"fault-proxy-{env.tag}-{uuid.uuid4().hex[:6]}"
    env.client("dynamodb", direct=True).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def stored(env, table, pk):
    item = env.client("dynamodb", direct=True).get_item(TableName=table, Key={"pk": {"S": pk}})
    return "Item" in item


def test_before_fault_leaves_nothing(env):
    table = new_table(env)
    dynamodb = env.client("dynamodb")
    for kind, codes, status in [
        ("internal", {"InternalServerError"}, 500),
        ("unavailable", {"ServiceUnavailable"}, 503),
        ("throttle", {"ThrottlingException", "ProvisionedThroughputExceededException"}, 400),
    ]:
        faults_only(env, services=["dynamodb"], after_share=0, before_kinds=[kind], operations=["dynamodb:PutItem"])
        pk = f"before-{kind}"
        error = error_of(lambda: dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}}))
        expect(error is not None and error[0] in codes and error[1] == status, f"{kind}: got {error}")
        expect(not stored(env, table, pk), f"{kind}: a BEFORE fault let the item through")
        counts = env.op_stats("dynamodb", "PutItem")
        expect(counts.get("faulted_before") == 1 and counts.get("forwarded") == 0, f"{kind}: stats {counts}")


def test_after_fault_leaves_item(env):
    table = new_table(env)
    dynamodb = env.client("dynamodb")
    faults_only(env, services=["dynamodb"], after_share=1, after_kinds=["internal"], operations=["PutItem"])
    error = error_of(lambda: dynamodb.put_item(TableName=table, Item={"pk": {"S": "after-500"}}))
    expect(error == ("InternalServerError", 500), f"after 500: got {error}")
    expect(stored(env, table, "after-500"), "an AFTER fault (500) lost the write moto made")

    env.configure(after_kinds=["unavailable"])
    error = error_of(lambda: dynamodb.put_item(TableName=table, Item={"pk": {"S": "after-503"}}))
    expect(error == ("ServiceUnavailable", 503), f"after 503: got {error}")
    expect(stored(env, table, "after-503"), "an AFTER fault (503) lost the write moto made")

    env.configure(after_kinds=["reset"])
    try:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "after-reset"}})
        raise AssertionError("a reset connection answered the caller")
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as error:
        print(f"    reset seen by botocore as {type(error).__name__}")
    expect(stored(env, table, "after-reset"), "an AFTER fault (reset) lost the write moto made")
    counts = env.op_stats("dynamodb", "PutItem")
    expect(counts.get("faulted_after") == 3 and counts.get("forwarded") == 0, f"stats {counts}")


def test_throttling_parsed_per_service(env):
    table = new_table(env)
    queue_url = env.client("sqs", direct=True).create_queue(QueueName=f"fault-proxy-{env.tag}")["QueueUrl"]
    calls = {
        "dynamodb": (
            lambda: env.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "x"}}),
            {"ThrottlingException", "ProvisionedThroughputExceededException"},
            400,
        ),
        "dynamodbstreams": (
            lambda: env.client("dynamodbstreams").list_streams(),
            {"LimitExceededException", "ThrottlingException"},
            400,
        ),
        "kms": (lambda: env.client("kms").list_keys(), {"ThrottlingException"}, 400),
        "events": (
            lambda: env.client("events").put_events(
                Entries=[{"Source": "fault.proxy", "DetailType": "Test", "Detail": "{}"}]
            ),
            {"ThrottlingException"},
            400,
        ),
        "sqs": (
            lambda: env.client("sqs").send_message(QueueUrl=queue_url, MessageBody="x"),
            {"RequestThrottled", "ThrottlingException"},
            400,
        ),
        "scheduler": (lambda: env.client("scheduler").list_schedules(), {"ThrottlingException"}, 429),
        "ses": (
            lambda: env.client("sesv2").send_email(
                FromEmailAddress="shop@example.com",
                Destination={"ToAddresses": ["customer@example.com"]},
                Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
            ),
            {"TooManyRequestsException"},
            429,
        ),
    }
    for service, (call, codes, status) in calls.items():
        faults_only(env, services=[service], after_share=0, before_kinds=["throttle"])
        seen = set()
        for _ in range(8):
            error = error_of(call)
            expect(error is not None, f"{service}: a throttled call succeeded")
            code, got_status = error
            expect(code in codes and got_status == status, f"{service}: got {error}, expected {codes} {status}")
            expect(code in RUST_THROTTLING_ERRORS, f"{service}: {code} is not throttling for the Rust SDK")
            expect(code in BOTOCORE_THROTTLING_ERRORS, f"{service}: {code} is not throttling for botocore")
            seen.add(code)
        expect(seen == codes, f"{service}: eight calls gave {seen}, expected every variant of {codes}")
        if service == "sqs":
            # Query-compatible: the code and fault type also come in x-amzn-query-error.
            try:
                call()
            except botocore.exceptions.ClientError as error:
                expect(error.response["Error"].get("Type") == "Sender", f"sqs: no query error type: {error.response}")
        print(f"    {service}: {sorted(seen)} HTTP {status}")
        total = env.stats()["totals"]
        calls_made = 9 if service == "sqs" else 8
        expect(total["faulted_before"] == calls_made and total["forwarded"] == 0, f"{service}: totals {total}")
        for kind, kind_status in [("internal", 500), ("unavailable", 503)]:
            env.configure(before_kinds=[kind])
            error = error_of(call)
            expect(error is not None and error[1] == kind_status, f"{service} {kind}: got {error}")

    # Query protocol: SES v1 and SNS, as AWS sends them (SNS's Throttled is 429
    # and in neither SDK's throttling list).
    faults_only(env, services=["ses", "sns"], after_share=0, before_kinds=["throttle"])
    error = error_of(
        lambda: env.client("ses").send_email(
            Source="shop@example.com",
            Destination={"ToAddresses": ["customer@example.com"]},
            Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
        )
    )
    expect(error == ("Throttling", 400), f"ses v1: got {error}")
    error = error_of(lambda: env.client("sns").publish(PhoneNumber="+15555550100", Message="x"))
    expect(error == ("Throttled", 429), f"sns: got {error}")
    expect(env.op_stats("sns", "Publish").get("faulted_before") == 1, "sns Publish not counted")


def test_after_operations_limit_after_faults(env):
    table = new_table(env)
    dynamodb = env.client("dynamodb")
    faults_only(env, services=["dynamodb"], after_share=1, after_kinds=["internal"], after_operations=["GetItem"])
    for i in range(4):
        expect(error_of(lambda: dynamodb.put_item(TableName=table, Item={"pk": {"S": f"a{i}"}})) is not None, "put")
        expect(error_of(lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": "x"}})) is not None, "get")
    stats = env.stats()["services"]["dynamodb"]
    expect((stats["PutItem"]["faulted_before"], stats["PutItem"]["faulted_after"]) == (4, 0), stats["PutItem"])
    expect((stats["GetItem"]["faulted_before"], stats["GetItem"]["faulted_after"]) == (0, 4), stats["GetItem"])
    expect(not any(stored(env, table, f"a{i}") for i in range(4)), "a BEFORE-faulted PutItem was written")
    env.configure(after_operations=None)


def test_transaction_tokens_make_retries_idempotent(env):
    table = new_table(env)

    def append(client, pk, token=None):
        request = dict(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"pk": {"S": pk}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            ]
        )
        if token:
            request["ClientRequestToken"] = token
        return lambda: client.transact_write_items(**request)

    # One AFTER fault, then the SDK's retry with the token it filled in: the
    # retry is answered as the first (applied) attempt was. Without the
    # proxy playing the token (moto ignores it), the retry conflicts with itself.
    retrying = env.client("dynamodb", attempts=3)
    faults_only(env, services=["dynamodb"], after_share=1, after_kinds=["internal"], max_consecutive=1)
    expect(error_of(append(retrying, "sdk-token")) is None, "the SDK's own token did not make the retry idempotent")
    expect(error_of(append(retrying, "own-token", token=uuid.uuid4().hex)) is None, "the caller's token did not help")
    counts = env.op_stats("dynamodb", "TransactWriteItems")
    expect((counts["faulted_after"], counts["replayed_by_token"], counts["forwarded"]) == (2, 2, 2), counts)
    expect(stored(env, table, "sdk-token") and stored(env, table, "own-token"), "a transaction was not applied")

    faults_only(
        env, services=["dynamodb"], after_share=1, after_kinds=["internal"], max_consecutive=1, idempotency_tokens=False
    )
    error = error_of(append(retrying, "no-replay"))
    expect(error is not None and error[0] == "TransactionCanceledException", f"without token replay: {error}")
    expect(stored(env, table, "no-replay"), "the first attempt was applied")
    env.configure(idempotency_tokens=True)

    # A conditional PutItem has no token: its retry fails its condition (as on AWS).
    faults_only(env, services=["dynamodb"], after_share=1, after_kinds=["reset"], max_consecutive=1)
    put = lambda: retrying.put_item(  # noqa: E731
        TableName=table, Item={"pk": {"S": "put"}}, ConditionExpression="attribute_not_exists(pk)"
    )
    error = error_of(put)
    expect(error is not None and error[0] == "ConditionalCheckFailedException", f"conditional put: {error}")

    # The same token with other parameters is refused; with no fault at all a
    # repeat is answered, not applied.
    env.configure(rate=0)
    once = env.client("dynamodb")
    token = uuid.uuid4().hex
    expect(error_of(append(once, "repeat", token=token)) is None, "first use of a token")
    expect(error_of(append(once, "repeat", token=token)) is None, "the repeat was applied again")
    error = error_of(append(once, "other", token=token))
    expect(error is not None and error[0] == "IdempotentParameterMismatchException", f"mismatch: {error}")
    expect(not stored(env, table, "other"), "a mismatched token was applied")


def test_moto_api_never_faulted(env):
    faults_only(
        env,
        services=["moto-api", "unknown", "dynamodb", "kms", "events", "scheduler", "ses", "sqs"],
        after_share=0.5,
    )
    for path in ["/moto-api/", "/moto-api/data.json"] * 5:
        with urllib.request.urlopen(env.proxy + path, timeout=30) as response:
            expect(response.status == 200, f"{path}: {response.status}")
    stats = env.stats()
    expect(stats["totals"]["faulted_before"] + stats["totals"]["faulted_after"] == 0, f"moto-api faulted: {stats}")
    expect(sum(s["forwarded"] for s in stats["services"]["moto-api"].values()) == 10, f"stats {stats}")


def test_stats_count(env):
    table = new_table(env)
    dynamodb = env.client("dynamodb")
    get = lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": "x"}})  # noqa: E731
    faults_only(env, services=["dynamodb"], after_share=0, operations=["GetItem"])
    for _ in range(3):
        expect(error_of(get) is not None, "a faulted GetItem succeeded")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}})  # not in the allow-list
    env.configure(rate=0)
    for _ in range(2):
        expect(error_of(get) is None, "GetItem failed at rate 0")
    env.configure(rate=1, after_share=1, after_kinds=["internal"])
    expect(error_of(get) == ("InternalServerError", 500), "AFTER GetItem")
    stats = env.stats()
    get_counts = stats["services"]["dynamodb"]["GetItem"]
    put_counts = stats["services"]["dynamodb"]["PutItem"]
    expect(
        (get_counts["forwarded"], get_counts["faulted_before"], get_counts["faulted_after"]) == (2, 3, 1),
        f"GetItem stats {get_counts}",
    )
    expect((put_counts["forwarded"], put_counts["faulted_before"], put_counts["faulted_after"]) == (1, 0, 0), put_counts)
    expect(stats["totals"]["forwarded"] == 3 and stats["totals"]["faulted_before"] == 3, stats["totals"])
    expect(sum(stats["faults_by_kind"].values()) == 4, stats["faults_by_kind"])


def test_rate_zero_faults_nothing(env):
    table = new_table(env)
    queue_url = env.client("sqs", direct=True).create_queue(QueueName=f"fault-proxy-zero-{env.tag}")["QueueUrl"]
    env.client("ses", direct=True).verify_email_identity(EmailAddress="shop@example.com")
    env.configure(
        rate=0, services=["dynamodb", "kms", "events", "scheduler", "ses", "sqs"], operations=None, reset_stats=True
    )
    dynamodb, kms, events = env.client("dynamodb"), env.client("kms"), env.client("events")
    for i in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"zero-{i}"}})
        dynamodb.get_item(TableName=table, Key={"pk": {"S": f"zero-{i}"}})
        kms.list_keys()
        events.put_events(Entries=[{"Source": "fault.proxy", "DetailType": "Test", "Detail": "{}"}])
    env.client("sqs").send_message(QueueUrl=queue_url, MessageBody="x")
    env.client("scheduler").list_schedules()
    env.client("sesv2").send_email(
        FromEmailAddress="shop@example.com",
        Destination={"ToAddresses": ["customer@example.com"]},
        Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
    )
    totals = env.stats()["totals"]
    expect(totals["faulted_before"] == 0 and totals["faulted_after"] == 0, f"rate 0 faulted: {totals}")
    expect(totals["forwarded"] == 23, f"rate 0 forwarded {totals}")


def test_same_seed_same_sequence(env):
    table = new_table(env)
    dynamodb, kms = env.client("dynamodb"), env.client("kms")
    get = lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": "x"}})  # noqa: E731

    def run(seed, interleave=False):
        env.configure(
            seed=seed,
            rate=0.5,
            after_share=0.5,
            services=["dynamodb", "kms"],
            operations=None,
            max_consecutive=0,
            before_kinds=["throttle", "internal", "unavailable"],
            after_kinds=["internal", "unavailable"],
            reset_stats=True,
        )
        outcomes = []
        for _ in range(30):
            if interleave:
                error_of(kms.list_keys)
            outcomes.append(error_of(get))
        return outcomes, env.op_stats("dynamodb", "GetItem")

    first, first_stats = run(42)
    again, again_stats = run(42)
    interleaved, _ = run(42, interleave=True)
    other, _ = run(43)
    expect(first == again, f"seed 42 twice:\n{first}\n{again}")
    expect(first_stats == again_stats, f"{first_stats} != {again_stats}")
    expect(first == interleaved, "another operation's calls changed GetItem's sequence")
    expect(first != other, "seeds 42 and 43 gave the same sequence")
    faulted = sum(1 for o in first if o is not None)
    expect(5 <= faulted <= 25, f"rate 0.5 faulted {faulted} of 30")
    expect(first_stats["faulted_before"] > 0 and first_stats["faulted_after"] > 0, first_stats)
    print(f"    seed 42: {faulted} of 30 GetItem faulted, {first_stats}")


def test_sdk_retries_get_through_the_cap(env):
    table = new_table(env)
    # Every attempt faulted until the cap: 2 faults then a clean attempt.
    faults_only(env, services=["dynamodb"], after_share=0, before_kinds=["throttle"], max_consecutive=2)
    standard = env.client("dynamodb", attempts=3, mode="standard")
    standard.put_item(TableName=table, Item={"pk": {"S": "retried"}})
    counts = env.op_stats("dynamodb", "PutItem")
    expect(
        (counts["faulted_before"], counts["forwarded"], counts["retries"], counts["faulted_last_attempt"])
        == (2, 1, 2, 0),
        f"standard mode: {counts}",
    )
    expect(stored(env, table, "retried"), "the retried write is missing")

    # AFTER faults are retried too: the write happens on every attempt (idempotent here).
    faults_only(env, services=["dynamodb"], after_share=1, after_kinds=["internal", "reset"], max_consecutive=2)
    standard.put_item(TableName=table, Item={"pk": {"S": "retried-after"}})
    counts = env.op_stats("dynamodb", "PutItem")
    expect((counts["faulted_after"], counts["forwarded"]) == (2, 1), f"after, standard mode: {counts}")

    # boto3's default (legacy mode, 5 attempts) also gets through.
    faults_only(env, services=["dynamodb"], after_share=0, before_kinds=["throttle"], max_consecutive=2)
    legacy = boto3.client(
        "dynamodb",
        endpoint_url=env.proxy,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    legacy.put_item(TableName=table, Item={"pk": {"S": "retried-legacy"}})
    counts = env.op_stats("dynamodb", "PutItem")
    expect((counts["faulted_before"], counts["forwarded"]) == (2, 1), f"legacy mode: {counts}")

    # A cap of 3 with 3 attempts: the call fails past the SDK's retries.
    faults_only(env, services=["dynamodb"], after_share=0, before_kinds=["throttle"], max_consecutive=3)
    error = error_of(lambda: standard.put_item(TableName=table, Item={"pk": {"S": "given-up"}}))
    expect(error is not None and error[0] in {"ThrottlingException", "ProvisionedThroughputExceededException"}, error)
    counts = env.op_stats("dynamodb", "PutItem")
    expect(
        (counts["faulted_before"], counts["forwarded"], counts["faulted_last_attempt"]) == (3, 0, 1),
        f"cap 3: {counts}",
    )
    expect(not stored(env, table, "given-up"), "a call that failed for good was written")

    # The cap is per call: a new call (new invocation id) draws again.
    single = env.client("dynamodb", attempts=1)
    for _ in range(3):
        expect(error_of(lambda: single.get_item(TableName=table, Key={"pk": {"S": "x"}})) is not None, "capped")


def test_control_api_rejects_bad_config(env):
    for bad in [{"rate": 2}, {"after_kinds": ["throttle"]}, {"no_such_option": 1}, {"max_consecutive": -1}]:
        try:
            env.configure(**bad)
            raise AssertionError(f"{bad} was accepted")
        except urllib.error.HTTPError as error:
            expect(error.code == 400, f"{bad}: HTTP {error.code}")
    config = env.control("GET", "config")
    expect(config["rate"] in (0, 1) or 0 <= config["rate"] <= 1, config)


def sized_item(pk, sk, size, **extra):
    """An item of `size` bytes by DynamoDB's rules: pk (S) + sk (N, one digit:
    2 + 2 bytes) + `d` (S) padded to the size."""
    item = {"pk": {"S": pk}, "sk": {"N": str(sk)}, **extra}
    fixed = 2 + len(pk.encode()) + 2 + 2 + sum(len(k) + len(v["S"]) for k, v in extra.items())
    item["d"] = {"S": "x" * (size - fixed - 1)}
    return item


def test_capacity_units_counted_by_dynamodb_rules(env):
    name = f"fault-proxy-{env.tag}-{uuid.uuid4().hex[:6]}"
    env.client("dynamodb", direct=True).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    env.configure(rate=0, capacity_units=True, reset_stats=True)
    dynamodb = env.client("dynamodb")
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    try:
        big = sized_item("a", 1, 1500)
        expect(fault_proxy.item_size(big) == 1500, f"the test's own item is {fault_proxy.item_size(big)} bytes")
        dynamodb.put_item(TableName=name, Item=big)  # new, 1500 B: 2 units
        dynamodb.put_item(TableName=name, Item=sized_item("a", 1, 100))  # replaces 1500 B by 100 B: 2
        dynamodb.update_item(  # 100 B -> 2098 B: 3
            TableName=name, Key=key, UpdateExpression="SET #d = :d",
            ExpressionAttributeNames={"#d": "d"}, ExpressionAttributeValues={":d": {"S": "y" * 2090}},
        )
        failed = error_of(lambda: dynamodb.put_item(  # condition fails on the 2098 B item: counted, 3
            TableName=name, Item=sized_item("a", 1, 10), ConditionExpression="attribute_not_exists(pk)"))
        expect(failed and failed[0] == "ConditionalCheckFailedException", f"conditional put: {failed}")
        dynamodb.delete_item(TableName=name, Key=key)  # deletes a 2098 B item: 3
        dynamodb.transact_write_items(TransactItems=[  # 2 x (1 + 2) = 6
            {"Put": {"TableName": name, "Item": sized_item("a", 2, 1000)}},
            {"Put": {"TableName": name, "Item": sized_item("a", 3, 1025)}},
        ])
        dynamodb.put_item(TableName=name, Item=sized_item("a", 4, 5000))  # 5 units
        dynamodb.get_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"N": "4"}})  # eventually: 0.5 x 2 = 1
        dynamodb.get_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"N": "4"}}, ConsistentRead=True)  # 2
        dynamodb.get_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"N": "2"}},  # whole item, not projected: 1
                          ProjectionExpression="pk", ConsistentRead=True)
        dynamodb.get_item(TableName=name, Key={"pk": {"S": "none"}, "sk": {"N": "1"}})  # nothing found: 0.5
        # 1000 + 1025 + 5000 = 7025 B evaluated (the projection and the filter change nothing): 2 units
        dynamodb.query(TableName=name, KeyConditionExpression="#pk = :pk", ConsistentRead=True,
                       ExpressionAttributeNames={"#pk": "pk", "#d": "d"}, ProjectionExpression="#pk, #d",
                       FilterExpression="size(#d) > :n",
                       ExpressionAttributeValues={":pk": {"S": "a"}, ":n": {"N": "4000"}})
        dynamodb.query(TableName=name, KeyConditionExpression="pk = :pk", Limit=1,  # 1000 B, eventually: 0.5
                       ExpressionAttributeValues={":pk": {"S": "a"}})
        dynamodb.batch_get_item(RequestItems={name: {"Keys": [  # 1 + 2 + 1 (nothing found, consistent)
            {"pk": {"S": "a"}, "sk": {"N": "2"}}, {"pk": {"S": "a"}, "sk": {"N": "4"}},
            {"pk": {"S": "a"}, "sk": {"N": "9"}}], "ConsistentRead": True}})
        dynamodb.transact_get_items(TransactItems=[  # 2 x (1 + 2) = 6
            {"Get": {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}}}},
            {"Get": {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "4"}}}},
        ])
        capacity = env.stats()["dynamodb_capacity"]
    finally:
        env.configure(capacity_units=False)
    got = {op: (u["write_units"], u["read_units"], u["requests"]) for op, u in capacity["tables"][name].items()}
    want = {
        "PutItem": (2 + 2 + 3 + 5, 0, 4),
        "UpdateItem": (3, 0, 1),
        "DeleteItem": (3, 0, 1),
        "TransactWriteItems": (6, 0, 1),
        "GetItem": (0, 1 + 2 + 1 + 0.5, 4),
        "Query": (0, 2 + 0.5, 2),
        "BatchGetItem": (0, 1 + 2 + 1, 1),
        "TransactGetItems": (0, 6, 1),
    }
    expect(got == want, f"capacity units: got {got}, want {want}")
    puts = capacity["tables"][name]["PutItem"]
    expect(puts["conditional_failures"] == 1, puts)
    expect(puts["bytes_written"] == 1500 + 1500 + 2098 + 5000 and puts["items_written"] == 4, puts)
    expect(capacity["unmetered"] == 0, f"unmetered requests: {capacity['unmetered']}")


def test_entries_counted(env):
    env.configure(rate=0, reset_stats=True)
    answer = env.client("events").put_events(Entries=[
        {"Source": "fault-proxy.test", "DetailType": "t", "Detail": "{}", "EventBusName": "default"}
        for _ in range(3)])
    expect(answer.get("FailedEntryCount") == 0, answer)
    counts = env.op_stats("events", "PutEvents")
    expect(counts.get("entries") == 3 and counts.get("forwarded") == 1, f"stats {counts}")


def test_caller_read_from_the_sdk_user_agent(env):
    # As the AWS SDK for Rust sends it with AWS_SDK_UA_APP_ID=campaign.
    rust = {"x-amz-user-agent": "aws-sdk-rust/1.3.9 ua/2.1 api/dynamodb/1.98.0 os/linux lang/rust/1.89.0 "
                                "m/E app/campaign",
            "user-agent": "aws-sdk-rust/1.3.9 os/linux lang/rust/1.89.0"}
    expect(fault_proxy.caller_of(rust) == "campaign", fault_proxy.caller_of(rust))
    expect(fault_proxy.caller_of({"user-agent": "Boto3/1.40 md/Botocore#1.43 app/relay cfg/retry-mode#standard"})
           == "relay", "botocore's user agent")
    expect(fault_proxy.caller_of({"user-agent": "Boto3/1.40 md/Botocore#1.43"}) == fault_proxy.UNATTRIBUTED,
           "no app id")
    expect(fault_proxy.caller_of({"user-agent": "myapp/1.0"}) == fault_proxy.UNATTRIBUTED, "app/ must be a token")


def test_calls_and_units_counted_per_caller(env):
    table = new_table(env)
    env.configure(rate=0, capacity_units=True, reset_stats=True)
    try:
        campaign = env.client("dynamodb", app_id="campaign")
        campaign.put_item(TableName=table, Item={"pk": {"S": "one"}, "d": {"S": "x" * 1500}})  # 2 write units
        campaign.get_item(TableName=table, Key={"pk": {"S": "one"}}, ConsistentRead=True)  # 1 read unit
        env.client("dynamodb", app_id="channel").get_item(TableName=table, Key={"pk": {"S": "one"}})  # 0.5
        env.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "none"}})  # unattributed: 0.5
        env.client("events", app_id="relay").put_events(Entries=[
            {"Source": "fault-proxy.test", "DetailType": "t", "Detail": "{}", "EventBusName": "default"}
            for _ in range(2)])
        stats = env.stats()
    finally:
        env.configure(capacity_units=False)
    by_caller = stats["by_caller"]
    expect(set(by_caller) == {"campaign", "channel", "relay", fault_proxy.UNATTRIBUTED}, sorted(by_caller))

    def units(caller):
        ops = by_caller[caller].get("dynamodb_capacity", {}).get("tables", {}).get(table, {})
        return {op: (u["write_units"], u["read_units"], u["requests"]) for op, u in ops.items()}

    expect(units("campaign") == {"PutItem": (2, 0, 1), "GetItem": (0, 1, 1)}, units("campaign"))
    expect(units("channel") == {"GetItem": (0, 0.5, 1)}, units("channel"))
    expect(units(fault_proxy.UNATTRIBUTED) == {"GetItem": (0, 0.5, 1)}, units(fault_proxy.UNATTRIBUTED))
    expect(units("relay") == {}, units("relay"))
    calls = by_caller["campaign"]["services"]["dynamodb"]
    expect(calls["PutItem"]["forwarded"] == 1 and calls["GetItem"]["forwarded"] == 1, calls)
    relay = by_caller["relay"]["services"]
    expect(set(relay) == {"events"} and relay["events"]["PutEvents"]["entries"] == 2, relay)
    # The overall counts are the sum of the callers'.
    overall = stats["dynamodb_capacity"]["tables"][table]["GetItem"]
    expect(overall["requests"] == 3 and overall["read_units"] == 2, overall)


TESTS = [
    test_before_fault_leaves_nothing,
    test_after_fault_leaves_item,
    test_throttling_parsed_per_service,
    test_after_operations_limit_after_faults,
    test_transaction_tokens_make_retries_idempotent,
    test_moto_api_never_faulted,
    test_stats_count,
    test_rate_zero_faults_nothing,
    test_same_seed_same_sequence,
    test_sdk_retries_get_through_the_cap,
    test_control_api_rejects_bad_config,
    test_capacity_units_counted_by_dynamodb_rules,
    test_entries_counted,
    test_caller_read_from_the_sdk_user_agent,
    test_calls_and_units_counted_per_caller,
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moto", help="use this running moto instead of starting one")
    parser.add_argument("-k", dest="only", help="run only the tests whose name contains this")
    args = parser.parse_args()

    processes = []
    try:
        moto_url = args.moto
        if moto_url is None:
            port = free_port()
            moto = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(moto)
            wait_for(port, moto, "moto")
            moto_url = f"http://127.0.0.1:{port}"
        proxy = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "fault_proxy.py"), "--moto", moto_url, "--port", "0", "--rate", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(proxy)
        line = proxy.stdout.readline().strip()
        if not line.startswith("fault-proxy listening on "):
            raise RuntimeError(f"the proxy did not start: {line!r}")
        env = Env(moto_url, line.rsplit(" ", 1)[1])
        print(f"moto {moto_url}, proxy {env.proxy}")

        failed = []
        for test in TESTS:
            if args.only and args.only not in test.__name__:
                continue
            started = time.monotonic()
            try:
                test(env)
                print(f"ok   {test.__name__} ({time.monotonic() - started:.1f} s)")
            except Exception:  # noqa: BLE001 (report every failure, then exit non-zero)
                failed.append(test.__name__)
                print(f"FAIL {test.__name__}")
                traceback.print_exc()
        if failed:
            print(f"{len(failed)} failed: {', '.join(failed)}")
            return 1
        print("all fault proxy tests passed")
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
