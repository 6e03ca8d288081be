"""moto's server with one request handled at a time.

Usage (instead of `moto_server -H HOST -p PORT`), with moto[server] 5.x
installed in the interpreter that runs it:

    python scripts/moto_server.py -H 127.0.0.1 -p 5055

Why: `moto_server` serves requests on many threads without a lock around its
backends. Its TransactWriteItems deep-copies the table first and, when a
condition fails, puts that copy back, so a concurrently committed write can be
undone after it was acknowledged (seen with moto 5.2.5: the contract's sixteen
concurrent writers lost one or more acknowledged events in most runs). Real
DynamoDB does not do that. This wrapper keeps the threaded HTTP server (so
keep-alive connections work) but runs the moto application under one lock, so
each request sees and leaves a consistent store.

`GET /moto-api/data.json?service=ses` (our addition) answers moto's model
data of the named services only. moto's own endpoint serialises every model
instance of every service (each DynamoDB item among them): on a run's stack
it took 13 s per call, where the test harnesses only want the mail SES kept.
Without the parameter the request goes to moto as it is.

moto also keeps every model instance it ever created, for that dashboard:
every DynamoDB item, and every copy of a table its transactions make. On a
chaos run (scripts/chaos.py, 50 stories) that grew to 8 GB in 7 minutes and
10 000 requests, with moto at 100 % of a core. Here only the instances of
the services the harnesses read back (SES, SNS) are kept; the stores
themselves are moto's as ever.

And moto's DynamoDB `Query` on a table (not an index) sorts every item of the
table, then keeps the asked partition's: here it sorts the partition alone
(the same items in the same order; measured with py-spy on that run).

moto's `TransactWriteItems` deep-copies every table the transaction names
(every item, and every stream record the table ever had) before it writes,
to put the copy back if a condition fails. On a chaos run that was most of
moto's time: about 28 requests a second on a full core, slower as the tables
grew. Here the transaction saves only the items it names and the length of
their tables' stream records; when moto cancels the transaction, those items
are put back as they were and the stream records it added are taken off.
The outcome is the same (moto checks and writes item by item and undoes it
all on any failure), at a cost that no longer grows with the tables.
"""

import argparse
import json
import threading
import urllib.parse

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

TRACKED_SERVICES = {"ses", "sesv2", "sns"}


def track_only(services: set) -> None:
    """moto's model instances are tracked (for /moto-api/data.json) only for
    `services`."""
    from moto.core.common_models import BaseModel

    def new(cls, *args, **kwargs):
        instance = object.__new__(cls)
        if cls.__module__.split(".")[1] in services:
            cls.instances_tracked.append(instance)
        return instance

    BaseModel.__new__ = staticmethod(new)


def model_data(services: set) -> dict:
    """moto's /moto-api/data.json, for `services` only."""
    from moto.core.model_instances import model_data as models_by_service

    results: dict = {}
    for service in sorted(set(models_by_service) & services):
        results[service] = {}
        for name, model in sorted(models_by_service[service].items()):
            instances = []
            for instance in model.instances_tracked:
                fields = {}
                for attr in dir(instance):
                    if attr.startswith("_"):
                        continue
                    try:
                        value = getattr(instance, attr)
                        json.dumps(value)
                    except (TypeError, AttributeError, ValueError):
                        continue
                    fields[attr] = value
                instances.append(fields)
            results[service][name] = instances
    return results


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if environ.get("PATH_INFO") == "/moto-api/data.json" and query.get("service"):
            with lock:
                body = json.dumps(model_data(set(query["service"]))).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with lock:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    return handle


def query_one_partition() -> None:
    """moto's table `Query` reads only the asked partition (see the module doc)."""
    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name is not None or hash_key is None:
            return original(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key)

        def partition_items():
            if partition is None:
                return []
            items = list(partition.values()) if self.range_key_attr else [partition]
            return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

        self.all_items = partition_items
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


def transactions_save_only_their_items() -> None:
    """`TransactWriteItems` without a copy of whole tables (see the module doc)."""
    import copy
    import types

    from moto.dynamodb import models as backend_module
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    def deepcopy_except_tables(value, *args, **kwargs):
        # moto's own transaction copies whole tables to roll back: hand it the
        # table itself (the rollback below restores the items instead).
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, *args, **kwargs)

    backend_module.copy = types.SimpleNamespace(deepcopy=deepcopy_except_tables)
    original = DynamoDBBackend.transact_write_items

    def key_of(table, op_type, op):
        key = op.get("Item") if op_type == "Put" else op.get("Key")
        if not isinstance(key, dict) or table.hash_key_attr not in key:
            return None
        hash_value = DynamoType(key[table.hash_key_attr])
        if table.range_key_attr is None:
            return hash_value, None
        if table.range_key_attr not in key:
            return None
        return hash_value, DynamoType(key[table.range_key_attr])

    def restore(table, hash_value, range_value, saved):
        if range_value is None:
            if saved is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = saved
        elif saved is None:
            partition = table.items.get(hash_value)
            if partition is not None:
                partition.pop(range_value, None)
                if not partition:
                    table.items.pop(hash_value, None)
        else:
            table.items[hash_value][range_value] = saved

    def transact_write_items(self, transact_items):
        saved = []
        stream_lengths = {}
        for entry in transact_items if isinstance(transact_items, list) else []:
            for op_type, op in entry.items():
                table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
                if table is None:
                    continue
                key = key_of(table, op_type, op)
                if key is None:
                    continue
                saved.append((table, *key, copy.deepcopy(table.get_item(*key))))
                if table.stream_shard is not None:
                    stream_lengths.setdefault(id(table), (table.stream_shard, len(table.stream_shard.items)))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                restore(table, hash_value, range_value, item)
            for shard, length in stream_lengths.values():
                del shard.items[length:]
            raise

    DynamoDBBackend.transact_write_items = transact_write_items


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    track_only(TRACKED_SERVICES)
    query_one_partition()
    transactions_save_only_their_items()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
