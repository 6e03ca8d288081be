#!/usr/bin/env python3
"""Tests of scripts/moto_server.py's own changes to moto, with boto3.

Usage:

    .venv/bin/python scripts/moto_server_test.py

Starts scripts/moto_server.py on a free port and checks that a cancelled
`TransactWriteItems` leaves every item it named, and the table's stream, as
they were, although the server no longer copies whole tables to roll back
(see the module doc of moto_server.py); and that one that succeeds writes
everything. It then prints how long transactions take on a table of growing
size (a figure, not an assertion: with whole-table copies the time grew with
the table). Exits non-zero if any test fails.
"""

import pathlib
import socket
import subprocess
import sys
import time
import traceback
import uuid

import boto3
import botocore.exceptions

SCRIPTS = pathlib.Path(__file__).resolve().parent
REGION = "us-east-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto did not listen on {port} within {seconds} s")


def clients(endpoint):
    kwargs = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
    return boto3.client("dynamodb", **kwargs), boto3.client("dynamodbstreams", **kwargs)


def new_table(ddb):
    name = f"tx-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name


def stream_records(ddb, streams, table):
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]


def item(ddb, table, pk, sk):
    return ddb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True).get("Item")


def put(table, pk, sk, **attrs):
    return {"Put": {"TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": sk}, **attrs}}}


def cancelled(ddb, items):
    try:
        ddb.transact_write_items(TransactItems=items)
    except botocore.exceptions.ClientError as error:
        return error.response["Error"]["Code"] == "TransactionCanceledException"
    return False


def test_a_cancelled_transaction_leaves_items_and_stream_as_they_were(ddb, streams):
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"N": "1"}})
    before = stream_records(ddb, streams, table)
    assert cancelled(
        ddb,
        [
            # Applied by moto before the failing condition below: must be undone.
            put(table, "b", "1", v={"N": "9"}),
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"N": "2"}},
                }
            },
            {"Delete": {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "0"}}}},
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": {"pk": {"S": "c"}, "sk": {"S": "1"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ],
    ), "the transaction must be cancelled"
    assert item(ddb, table, "b", "1") is None, "the put before the failed condition is undone"
    assert item(ddb, table, "a", "1")["v"] == {"N": "1"}, "the update before the failed condition is undone"
    after = stream_records(ddb, streams, table)
    assert len(after) == len(before), f"stream records: {len(before)} before, {len(after)} after"
    rows = ddb.scan(TableName=table)["Items"]
    assert len(rows) == 1, rows


def test_a_cancelled_transaction_restores_a_deleted_item(ddb, streams):
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"N": "1"}})
    assert cancelled(
        ddb,
        [
            {"Delete": {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
            put(table, "b", "1", v={"N": "1"}),
            {
                "Put": {
                    "TableName": table,
                    "Item": {"pk": {"S": "c"}, "sk": {"S": "1"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ],
    )
    assert item(ddb, table, "a", "1") == {"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"N": "1"}}
    assert item(ddb, table, "b", "1") is None


def test_a_transaction_that_succeeds_writes_everything(ddb, streams):
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            put(table, "b", "1", v={"N": "5"}),
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                    "UpdateExpression": "SET v = :v",
                    "ConditionExpression": "v = :old",
                    "ExpressionAttributeValues": {":v": {"N": "2"}, ":old": {"N": "1"}},
                }
            },
        ]
    )
    assert item(ddb, table, "b", "1")["v"] == {"N": "5"}
    assert item(ddb, table, "a", "1")["v"] == {"N": "2"}
    assert len(stream_records(ddb, streams, table)) == 3


def print_transaction_times(ddb):
    """Transactions per second as the table grows (printed, not asserted)."""
    table = new_table(ddb)
    filler = "x" * 400
    written = 0
    for size in (0, 2000, 8000):
        while written < size:
            ddb.batch_write_item(
                RequestItems={
                    table: [
                        {"PutRequest": {"Item": {"pk": {"S": f"f{written + i}"}, "sk": {"S": "1"}, "d": {"S": filler}}}}
                        for i in range(25)
                    ]
                }
            )
            written += 25
        started = time.perf_counter()
        count = 50
        for i in range(count):
            ddb.transact_write_items(TransactItems=[put(table, f"t{size}-{i}", "1"), put(table, f"u{size}-{i}", "1")])
        elapsed = time.perf_counter() - started
        print(f"  {size:>5} items in the table: {count / elapsed:6.0f} transactions/s")


def main():
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    failures = 0
    try:
        wait_for(port)
        ddb, streams = clients(f"http://127.0.0.1:{port}")
        tests = [
            test_a_cancelled_transaction_leaves_items_and_stream_as_they_were,
            test_a_cancelled_transaction_restores_a_deleted_item,
            test_a_transaction_that_succeeds_writes_everything,
        ]
        for test in tests:
            try:
                test(ddb, streams)
                print(f"ok   {test.__name__}")
            except Exception:
                failures += 1
                print(f"FAIL {test.__name__}")
                traceback.print_exc()
        print_transaction_times(ddb)
    finally:
        moto.terminate()
        moto.wait()
    print(f"{failures} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
