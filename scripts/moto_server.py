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
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
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
