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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    track_only(TRACKED_SERVICES)
    query_one_partition()
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
